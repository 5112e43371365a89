#include "tappa/server.h"

#include <httplib.h>

#include <chrono>
#include <cmath>
#include <ctime>
#include <nlohmann/json.hpp>
#include <set>

#include "server/scheduler.h"
#include "tappa/error.h"
#include "tappa/kv.h"
#include "tappa/tokenizer.h"

namespace tappa::server {

namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json error_json(const Refusal& r, const std::string& param = "") {
  json e = {{"message", r.message}, {"type", r.type}, {"code", r.status}};
  e["param"] = param.empty() ? json(nullptr) : json(param);
  return {{"error", e}};
}

void send_error(httplib::Response& res, const Refusal& r, const std::string& param = "") {
  res.status = r.status;
  if (r.status == 503 && r.retry_after > 0) res.set_header("Retry-After", std::to_string(r.retry_after));
  res.set_content(dump(error_json(r, param)), "application/json");
}

// A 4xx for a field; thrown by the parsers below and answered before anything reaches the engine.
struct BadField {
  int status;
  std::string param, message;
};
[[noreturn]] void bad(const std::string& param, const std::string& msg, int status = 400) {
  throw BadField{status, param, msg};
}

// Fields a request may have; anything else is refused by name (a typo must not be silently ignored).
void check_fields(const json& body, const std::set<std::string>& allowed) {
  for (auto it = body.begin(); it != body.end(); ++it)
    if (!allowed.count(it.key())) bad(it.key(), "unknown field '" + it.key() + "'");
}

bool present(const json& b, const char* k) { return b.contains(k) && !b[k].is_null(); }

int64_t get_int(const json& b, const char* k, int64_t lo, int64_t hi, int64_t def) {
  if (!present(b, k)) return def;
  const json& v = b[k];
  if (!v.is_number_integer() && !(v.is_number_float() && std::floor(v.get<double>()) == v.get<double>()))
    bad(k, std::string("'") + k + "' must be an integer");
  const double d = v.get<double>();
  if (d < static_cast<double>(lo) || d > static_cast<double>(hi))
    bad(k, std::string("'") + k + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + v.dump());
  return v.get<int64_t>();
}

double get_num(const json& b, const char* k, double lo, double hi, double def) {
  if (!present(b, k)) return def;
  if (!b[k].is_number()) bad(k, std::string("'") + k + "' must be a number");
  const double d = b[k].get<double>();
  if (!(d >= lo && d <= hi)) bad(k, std::string("'") + k + "' must be in [" + json(lo).dump() + ", " + json(hi).dump() + "], got " + b[k].dump());
  return d;
}

bool get_bool(const json& b, const char* k, bool def) {
  if (!present(b, k)) return def;
  if (!b[k].is_boolean()) bad(k, std::string("'") + k + "' must be true or false");
  return b[k].get<bool>();
}

std::string get_str(const json& b, const char* k, const std::string& def) {
  if (!present(b, k)) return def;
  if (!b[k].is_string()) bad(k, std::string("'") + k + "' must be a string");
  return b[k].get<std::string>();
}

// Code points in UTF-8 bytes (Python's len of the decoded text, what lm-eval compares offsets with).
size_t code_points(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

int64_t unix_now() { return static_cast<int64_t>(std::time(nullptr)); }

// A parsed generation request: its jobs share these options.
struct Request {
  bool chat = false, stream = false, echo = false, include_usage = false;
  int n = 1;
  int logprobs = -1;  // completions: top alternatives; chat: top_logprobs when logprobs is true
  std::vector<std::vector<int32_t>> prompts;
  GenerateOptions options;
};

}  // namespace

struct Server::Impl {
  Engine& engine;
  const Model& model;
  const Tokenizer& tok;
  ServerOptions opts;
  Scheduler sched;
  httplib::Server http;
  int port = 0;
  std::atomic<int64_t> requests{0}, http_errors{0};
  std::atomic<uint64_t> next_id{1};

  Impl(Engine& e, ServerOptions o)
      : engine(e), model(e.model()), tok(e.model().tokenizer()), opts(std::move(o)), sched(e, opts.scheduler) {}

  std::string new_id(const char* prefix) { return std::string(prefix) + std::to_string(unix_now()) + "-" + std::to_string(next_id++); }

  // Options common to both endpoints.
  void parse_common(const json& b, Request& r, int64_t n_prompt_max) {
    if (present(b, "model") && get_str(b, "model", "") != opts.model_name)
      bad("model", "model '" + b["model"].get<std::string>() + "' is not served here (GET /v1/models: '" + opts.model_name + "')", 404);
    GenerateOptions& o = r.options;
    o.sampling.temperature = static_cast<float>(get_num(b, "temperature", 0.0, 2.0, 1.0));
    o.sampling.top_p = static_cast<float>(get_num(b, "top_p", 0.0, 1.0, 1.0));
    o.sampling.top_k = static_cast<int>(get_int(b, "top_k", 0, 1 << 20, 0));
    o.sampling.seed = static_cast<uint64_t>(get_int(b, "seed", INT64_MIN, INT64_MAX, 0));
    if (get_num(b, "frequency_penalty", -2.0, 2.0, 0.0) != 0.0) bad("frequency_penalty", "'frequency_penalty' is not supported (only 0)");
    if (get_num(b, "presence_penalty", -2.0, 2.0, 0.0) != 0.0) bad("presence_penalty", "'presence_penalty' is not supported (only 0)");
    if (present(b, "logit_bias") && !(b["logit_bias"].is_object() && b["logit_bias"].empty()))
      bad("logit_bias", "'logit_bias' is not supported");
    r.n = static_cast<int>(get_int(b, "n", 1, 16, 1));
    r.stream = get_bool(b, "stream", false);
    if (present(b, "stream_options")) {
      if (!b["stream_options"].is_object()) bad("stream_options", "'stream_options' must be an object");
      r.include_usage = get_bool(b["stream_options"], "include_usage", false);
    }
    o.ignore_eos = get_bool(b, "ignore_eos", false);
    if (present(b, "stop")) {
      const json& s = b["stop"];
      if (s.is_string()) {
        o.stop.push_back(s.get<std::string>());
      } else if (s.is_array() && s.size() <= 16) {
        for (const json& x : s) {
          if (!x.is_string()) bad("stop", "'stop' must be a string or an array of up to 16 strings");
          o.stop.push_back(x.get<std::string>());
        }
      } else {
        bad("stop", "'stop' must be a string or an array of up to 16 strings");
      }
      for (const auto& x : o.stop)
        if (x.empty()) bad("stop", "'stop' strings must not be empty");
    }
    o.kv.method = get_str(b, "kv_method", "fullkv");
    if (present(b, "kv_budget")) o.kv.budget = static_cast<int>(get_int(b, "kv_budget", 1, 1 << 24, 0));
    if (present(b, "kv_ratio")) o.kv.ratio = get_num(b, "kv_ratio", 0.0, 0.999999, 0.0);
    try {
      validate_kv_options(o.kv);
    } catch (const Error& e) {
      bad("kv_method", e.what());
    }
    (void)n_prompt_max;
  }

  // max_tokens against the context: prompt + max_tokens must fit one sequence.
  void set_max_tokens(const json& b, Request& r, const char* key, int64_t def) {
    size_t longest = 0;
    for (const auto& p : r.prompts) longest = std::max(longest, p.size());
    const int64_t room = engine.n_ctx() - static_cast<int64_t>(longest);
    if (room < 0)
      bad(r.chat ? "messages" : "prompt", "the prompt has " + std::to_string(longest) + " tokens, more than the context of " +
                                              std::to_string(engine.n_ctx()) + " tokens");
    const int64_t m = get_int(b, key, 0, 1 << 24, std::min(def, room));
    if (m > room)
      bad(key, std::string("prompt (") + std::to_string(longest) + " tokens) + " + key + " " + std::to_string(m) +
                   " exceeds the context of " + std::to_string(engine.n_ctx()) + " tokens");
    r.options.max_tokens = static_cast<int>(m);
  }

  Request parse_completion(const json& b) {
    check_fields(b, {"model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "n", "stream",
                     "stream_options", "echo", "logprobs", "frequency_penalty", "presence_penalty", "logit_bias", "user",
                     "best_of", "suffix", "ignore_eos", "kv_method", "kv_budget", "kv_ratio"});
    Request r;
    if (!present(b, "prompt")) bad("prompt", "'prompt' is required");
    if (present(b, "suffix")) bad("suffix", "'suffix' is not supported");
    const json& p = b["prompt"];
    auto add_text = [&](const json& s) {
      std::vector<int32_t> t = tok.encode(s.get<std::string>(), true, false);
      if (t.empty()) bad("prompt", "the prompt is empty");
      r.prompts.push_back(std::move(t));
    };
    auto add_ids = [&](const json& a) {
      std::vector<int32_t> t;
      for (const json& x : a) {
        if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= tok.n_vocab())
          bad("prompt", "token ids must be integers in [0, " + std::to_string(tok.n_vocab()) + ")");
        t.push_back(x.get<int32_t>());
      }
      if (t.empty()) bad("prompt", "the prompt is empty");
      r.prompts.push_back(std::move(t));
    };
    if (p.is_string()) {
      add_text(p);
    } else if (p.is_array() && !p.empty() && p[0].is_number_integer()) {
      add_ids(p);  // one prompt of token ids, as long as the context allows (checked with max_tokens below)
    } else if (p.is_array() && !p.empty() && p.size() <= 64) {
      for (const json& x : p) {
        if (x.is_string()) add_text(x);
        else if (x.is_array()) add_ids(x);
        else bad("prompt", "'prompt' must be a string, an array of strings, or token ids");
      }
    } else {
      bad("prompt", "'prompt' must be a string, an array of up to 64 strings, or token ids");
    }
    parse_common(b, r, 0);
    if (get_int(b, "best_of", 1, 16, r.n) != r.n) bad("best_of", "'best_of' other than n is not supported");
    r.echo = get_bool(b, "echo", false);
    r.logprobs = static_cast<int>(get_int(b, "logprobs", 0, opts.max_logprobs, -1));
    r.options.logprobs = r.logprobs;
    r.options.prompt_logprobs = r.echo && r.logprobs >= 0;
    if (r.echo && r.stream) bad("echo", "'echo' with 'stream' is not supported");
    set_max_tokens(b, r, "max_tokens", 16);
    return r;
  }

  Request parse_chat(const json& b) {
    check_fields(b, {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "seed",
                     "stop", "n", "stream", "stream_options", "logprobs", "top_logprobs", "frequency_penalty",
                     "presence_penalty", "logit_bias", "user", "ignore_eos", "kv_method", "kv_budget", "kv_ratio"});
    Request r;
    r.chat = true;
    if (!present(b, "messages") || !b["messages"].is_array() || b["messages"].empty())
      bad("messages", "'messages' must be a non-empty array of {role, content}");
    std::vector<ChatMessage> msgs;
    for (const json& m : b["messages"]) {
      if (!m.is_object()) bad("messages", "each message must be an object {role, content}");
      const std::string role = get_str(m, "role", "");
      if (role != "system" && role != "user" && role != "assistant" && role != "developer")
        bad("messages", "message role must be system, developer, user or assistant, got '" + role + "'");
      std::string content;
      if (present(m, "content") && m["content"].is_string()) {
        content = m["content"].get<std::string>();
      } else if (present(m, "content") && m["content"].is_array()) {
        for (const json& part : m["content"]) {
          if (!part.is_object() || get_str(part, "type", "") != "text" || !present(part, "text") || !part["text"].is_string())
            bad("messages", "only text content parts ({\"type\": \"text\", \"text\": …}) are supported");
          content += part["text"].get<std::string>();
        }
      } else {
        bad("messages", "each message needs 'content' (a string or text parts)");
      }
      msgs.push_back({role == "developer" ? "system" : role, content});
    }
    const std::string text = tok.apply_chat_template(msgs, true);
    r.prompts.push_back(tok.encode(text, true, true));
    parse_common(b, r, 0);
    if (get_bool(b, "logprobs", false)) r.logprobs = static_cast<int>(get_int(b, "top_logprobs", 0, opts.max_logprobs, 0));
    else if (present(b, "top_logprobs")) bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
    r.options.logprobs = r.logprobs;
    const char* key = present(b, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    set_max_tokens(b, r, key, 1 << 24);
    return r;
  }

  // Waiting state of one HTTP request: its jobs and the condition variable the scheduler notifies.
  struct Pending {
    Scheduler& sched;
    std::condition_variable cv;
    std::vector<std::shared_ptr<Job>> jobs;
    explicit Pending(Scheduler& s) : sched(s) {}
    ~Pending() {
      // The scheduler may still hold a cancelled job for a step: it must not notify a dead cv.
      std::lock_guard lock(sched.mutex());
      for (auto& j : jobs) j->cv = nullptr;
    }
    void cancel_all() {
      for (auto& j : jobs)
        if (!j->cancel.load()) sched.cancel(*j);
    }
  };

  std::shared_ptr<Pending> submit(const Request& r) {
    auto p = std::make_shared<Pending>(sched);
    for (const auto& prompt : r.prompts)
      for (int i = 0; i < r.n; ++i) {
        auto j = std::make_shared<Job>();
        j->prompt = prompt;
        j->options = r.options;
        if (r.n > 1 && r.options.sampling.temperature > 0) j->options.sampling.seed += static_cast<uint64_t>(i);
        j->stream = r.stream;
        j->cv = &p->cv;
        try {
          j->reserve_bytes = estimate_kv_bytes(model, static_cast<int>(prompt.size()), j->options);
        } catch (const Error& e) {
          bad("kv_budget", e.what());
        }
        j->full_kv_bytes = full_kv_bytes(model, static_cast<int64_t>(prompt.size()) + r.options.max_tokens);
        p->jobs.push_back(std::move(j));
      }
    sched.submit(p->jobs);
    return p;
  }

  // Waits until every job left the queue; returns the first refusal of any (the others are cancelled).
  std::optional<Refusal> wait_admitted(Pending& p) {
    std::unique_lock lock(sched.mutex());
    p.cv.wait(lock, [&] {
      for (auto& j : p.jobs)
        if (j->state == Job::State::queued && !j->error) return false;
      return true;
    });
    for (auto& j : p.jobs)
      if (j->error) {
        Refusal e = *j->error;
        lock.unlock();
        p.cancel_all();
        return e;
      }
    return std::nullopt;
  }

  json usage_json(const Pending& p) const {
    int64_t prompt = 0, gen = 0;
    size_t kv = 0, kv_full = 0;
    for (const auto& j : p.jobs) {
      prompt += j->result.n_prompt;
      gen += static_cast<int64_t>(j->result.tokens.size());
      kv += j->result.kv_bytes_held;
      kv_full += j->full_kv_bytes;
    }
    return {{"prompt_tokens", prompt}, {"completion_tokens", gen}, {"total_tokens", prompt + gen},
            {"kv_bytes_held", kv}, {"kv_bytes_uncompressed", kv_full}};
  }

  // The OpenAI completions logprobs object (tokens, token_logprobs, top_logprobs, text_offset) and the text.
  std::pair<std::string, json> completion_choice_text(const Job& j, bool echo) const {
    const GenerateResult& g = j.result;
    std::string text;
    json tokens = json::array(), lps = json::array(), tops = json::array(), offsets = json::array();
    auto top_json = [&](const TokenLogprob& t) {
      json o = json::object();
      for (const auto& [id, lp] : t.top) o[tok.token_to_piece(id)] = lp;
      if (o.empty()) o[tok.token_to_piece(t.token)] = t.logprob;
      return o;
    };
    if (echo) {
      for (size_t i = 0; i < j.prompt.size(); ++i) {
        const std::string piece = tok.token_to_piece(j.prompt[i]);
        offsets.push_back(code_points(text));
        tokens.push_back(piece);
        if (i == 0 || i - 1 >= g.prompt_logprobs.size()) {
          lps.push_back(nullptr);
          tops.push_back(nullptr);
        } else {
          lps.push_back(g.prompt_logprobs[i - 1].logprob);
          tops.push_back(top_json(g.prompt_logprobs[i - 1]));
        }
        text += piece;
      }
    }
    const size_t gen_start = text.size();
    size_t pos = 0;  // bytes of the generated text consumed by tokens so far
    for (size_t i = 0; i < g.logprobs.size(); ++i) {
      const std::string piece = tok.token_to_piece(g.logprobs[i].token);
      offsets.push_back(code_points(text) + code_points(std::string_view(g.text).substr(0, std::min(pos, g.text.size()))));
      pos += piece.size();
      tokens.push_back(piece);
      lps.push_back(g.logprobs[i].logprob);
      tops.push_back(top_json(g.logprobs[i]));
    }
    if (g.eog_logprob) {  // the end token: in the lists (a scorer drops the last entry), not in the text
      offsets.push_back(code_points(text) + code_points(g.text));
      tokens.push_back(tok.token_text(g.eog_logprob->token));
      lps.push_back(g.eog_logprob->logprob);
      tops.push_back(top_json(*g.eog_logprob));
    }
    (void)gen_start;
    text += g.text;
    json lp = nullptr;
    if (j.options.logprobs >= 0)
      lp = {{"tokens", tokens}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offsets}};
    return {text, lp};
  }

  json chat_logprobs(const Job& j) const {
    if (j.options.logprobs < 0) return nullptr;
    json content = json::array();
    for (const TokenLogprob& t : j.result.logprobs) {
      const std::string piece = tok.token_to_piece(t.token);
      json top = json::array();
      for (const auto& [id, lp] : t.top) {
        const std::string s = tok.token_to_piece(id);
        top.push_back({{"token", s}, {"logprob", lp}, {"bytes", std::vector<unsigned char>(s.begin(), s.end())}});
      }
      content.push_back({{"token", piece}, {"logprob", t.logprob},
                         {"bytes", std::vector<unsigned char>(piece.begin(), piece.end())}, {"top_logprobs", top}});
    }
    return {{"content", content}};
  }

  static const char* finish_name(const Job& j) {
    if (j.result.finish == FinishReason::running) return "cancelled";
    return finish_reason_name(j.result.finish);
  }

  json final_body(const Request& r, Pending& p, const std::string& id, int64_t created) {
    json choices = json::array();
    for (size_t i = 0; i < p.jobs.size(); ++i) {
      const Job& j = *p.jobs[i];
      if (r.chat) {
        choices.push_back({{"index", i},
                           {"message", {{"role", "assistant"}, {"content", j.result.text}}},
                           {"logprobs", chat_logprobs(j)},
                           {"finish_reason", finish_name(j)}});
      } else {
        auto [text, lp] = completion_choice_text(j, r.echo);
        choices.push_back({{"index", i}, {"text", text}, {"logprobs", lp}, {"finish_reason", finish_name(j)}});
      }
    }
    return {{"id", id}, {"object", r.chat ? "chat.completion" : "text_completion"}, {"created", created},
            {"model", opts.model_name}, {"choices", choices}, {"usage", usage_json(p)}};
  }

  void handle_generate(const httplib::Request& req, httplib::Response& res, bool chat) {
    ++requests;
    json body;
    try {
      body = json::parse(req.body);
    } catch (const json::parse_error& e) {
      send_error(res, Refusal{400, "invalid_request_error", std::string("the body is not valid JSON: ") + e.what()});
      return;
    }
    if (!body.is_object()) {
      send_error(res, Refusal{400, "invalid_request_error", "the body must be a JSON object"});
      return;
    }
    Request r;
    std::shared_ptr<Pending> p;
    try {
      r = chat ? parse_chat(body) : parse_completion(body);
      p = submit(r);
    } catch (const BadField& e) {
      send_error(res, Refusal{e.status, e.status == 404 ? "not_found_error" : "invalid_request_error", e.message}, e.param);
      return;
    } catch (const Refusal& e) {
      send_error(res, e);
      return;
    } catch (const Error& e) {
      send_error(res, Refusal{400, "invalid_request_error", e.what()});
      return;
    }
    if (auto e = wait_admitted(*p)) {
      send_error(res, *e);
      return;
    }
    const std::string id = new_id(chat ? "chatcmpl-" : "cmpl-");
    const int64_t created = unix_now();
    if (r.stream) {
      res.set_header("Cache-Control", "no-cache");
      res.set_chunked_content_provider(
          "text/event-stream",
          [this, p, r, id, created, reported = std::vector<bool>(p->jobs.size(), false),
           first = true](size_t, httplib::DataSink& sink) mutable {
            auto send = [&](const json& j) {
              const std::string s = "data: " + dump(j) + "\n\n";
              return sink.write(s.data(), s.size());
            };
            auto chunk = [&](size_t i, const json& delta_or_text, const json& finish) {
              json c = {{"index", i}, {"finish_reason", finish}};
              if (r.chat) c["delta"] = delta_or_text;
              else {
                c["text"] = delta_or_text;
                c["logprobs"] = nullptr;
              }
              return json{{"id", id}, {"object", r.chat ? "chat.completion.chunk" : "text_completion"},
                          {"created", created}, {"model", opts.model_name}, {"choices", json::array({c})}};
            };
            if (first && r.chat) {
              first = false;
              for (size_t i = 0; i < p->jobs.size(); ++i)
                if (!send(chunk(i, {{"role", "assistant"}, {"content", ""}}, nullptr))) return p->cancel_all(), false;
            }
            std::vector<std::string> texts(p->jobs.size());
            std::vector<bool> now_done(p->jobs.size(), false);
            std::vector<std::optional<Refusal>> errors(p->jobs.size());
            bool all_done = true, any = false;
            {
              std::unique_lock lock(sched.mutex());
              auto ready = [&] {
                for (size_t i = 0; i < p->jobs.size(); ++i)
                  if (!p->jobs[i]->text.empty() || (p->jobs[i]->state == Job::State::done && !reported[i])) return true;
                return false;
              };
              p->cv.wait_for(lock, 1s, ready);
              for (size_t i = 0; i < p->jobs.size(); ++i) {
                Job& j = *p->jobs[i];
                texts[i].swap(j.text);
                any |= !texts[i].empty();
                if (j.state == Job::State::done && !reported[i]) {
                  now_done[i] = true;
                  errors[i] = j.error;
                }
                all_done &= j.state == Job::State::done;
              }
            }
            for (size_t i = 0; i < p->jobs.size(); ++i) {
              if (!texts[i].empty()) {
                const json d = r.chat ? json{{"content", texts[i]}} : json(texts[i]);
                if (!send(chunk(i, d, nullptr))) return p->cancel_all(), false;
              }
              if (now_done[i]) {
                reported[i] = true;
                any = true;
                if (errors[i]) {
                  if (!send(error_json(*errors[i]))) return p->cancel_all(), false;
                } else {
                  const json d = r.chat ? json::object() : json("");
                  if (!send(chunk(i, d, finish_name(*p->jobs[i])))) return p->cancel_all(), false;
                }
              }
            }
            if (all_done) {
              if (r.include_usage) {
                json u = {{"id", id}, {"object", r.chat ? "chat.completion.chunk" : "text_completion"}, {"created", created},
                          {"model", opts.model_name}, {"choices", json::array()}, {"usage", usage_json(*p)}};
                if (!send(u)) return false;
              }
              static const char done[] = "data: [DONE]\n\n";
              sink.write(done, sizeof done - 1);
              sink.done();
              return true;
            }
            if (!any) {  // nothing new for a second: a comment line, which also finds a client that left
              static const char ka[] = ": keep-alive\n\n";
              if (!sink.write(ka, sizeof ka - 1)) return p->cancel_all(), false;
            }
            return true;
          },
          [p](bool success) {
            if (!success) p->cancel_all();
          });
      return;
    }
    // Not streamed: the body comes when every job is done. While waiting (after the first two
    // seconds) a space goes out every second — JSON allows leading whitespace — so that a client that
    // left is noticed (the write fails) and its jobs cancelled.
    res.set_chunked_content_provider(
        "application/json",
        [this, p, r, id, created, t0 = std::chrono::steady_clock::now()](size_t, httplib::DataSink& sink) {
          bool all_done = false;
          {
            std::unique_lock lock(sched.mutex());
            all_done = p->cv.wait_for(lock, 1s, [&] {
              for (auto& j : p->jobs)
                if (j->state != Job::State::done) return false;
              return true;
            });
          }
          if (!all_done) {
            if (std::chrono::steady_clock::now() - t0 > 2s && !sink.write(" ", 1)) return p->cancel_all(), false;
            return true;
          }
          std::string s;
          for (auto& j : p->jobs)
            if (j->error) s = dump(error_json(*j->error));
          if (s.empty()) s = dump(final_body(r, *p, id, created));
          s += "\n";
          sink.write(s.data(), s.size());
          sink.done();
          return true;
        },
        [p](bool success) {
          if (!success) p->cancel_all();
        });
  }

  std::string metrics() const {
    const SchedulerStats s = sched.stats();
    std::string o;
    auto m = [&](const char* name, const char* type, const char* help, double v) {
      o += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " + json(v).dump() + "\n";
    };
    m("tappa_http_requests_total", "counter", "Generation requests received.", static_cast<double>(requests.load()));
    m("tappa_jobs_submitted_total", "counter", "Generations queued (one per choice).", static_cast<double>(s.jobs_submitted));
    m("tappa_jobs_finished_total", "counter", "Generations finished.", static_cast<double>(s.jobs_finished));
    m("tappa_jobs_cancelled_total", "counter", "Generations cancelled (client gone).", static_cast<double>(s.jobs_cancelled));
    m("tappa_jobs_failed_total", "counter", "Generations failed or refused after queueing.", static_cast<double>(s.jobs_failed));
    m("tappa_rejected_queue_full_total", "counter", "Refused: queue full (503).", static_cast<double>(s.rejected_queue_full));
    m("tappa_rejected_queue_timeout_total", "counter", "Refused: waited too long (503).", static_cast<double>(s.rejected_queue_timeout));
    m("tappa_rejected_too_large_total", "counter", "Refused: larger than the KV cap (400).", static_cast<double>(s.rejected_too_large));
    m("tappa_prompt_tokens_total", "counter", "Prompt tokens processed.", static_cast<double>(s.prompt_tokens));
    m("tappa_generated_tokens_total", "counter", "Tokens generated.", static_cast<double>(s.generated_tokens));
    m("tappa_decode_steps_total", "counter", "Batched forward passes.", static_cast<double>(s.steps));
    m("tappa_running", "gauge", "Generations being stepped.", s.running);
    m("tappa_queue_depth", "gauge", "Generations waiting for admission.", s.queued);
    m("tappa_kv_bytes_held", "gauge", "KV (and logit) bytes the running generations hold.", static_cast<double>(s.kv_bytes_held));
    m("tappa_kv_bytes_reserved", "gauge", "KV bytes admission has reserved.", static_cast<double>(s.kv_bytes_reserved));
    m("tappa_kv_bytes_cap", "gauge", "The KV memory cap.", static_cast<double>(s.kv_cap));
    m("tappa_kv_evicted_rows_total", "counter", "KV rows evicted by compression.", static_cast<double>(s.kv_evicted_rows));
    m("tappa_generated_tokens_per_second", "gauge", "Generation rate over the last ~10 s.", s.generated_tokens_per_s);
    m("tappa_prompt_tokens_per_second", "gauge", "Prompt rate over the last ~10 s.", s.prompt_tokens_per_s);
    return o;
  }

  void routes() {
    http.new_task_queue = [n = opts.http_threads] { return new httplib::ThreadPool(static_cast<size_t>(n)); };
    http.set_payload_max_length(opts.max_body_bytes);
    http.set_read_timeout(30);
    http.set_write_timeout(30);
    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (!opts.api_key.empty() && req.get_header_value("Authorization") != "Bearer " + opts.api_key) {
        send_error(res, Refusal{401, "authentication_error", "a valid API key is needed: Authorization: Bearer <key>"});
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });
    http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      std::string msg = res.status == 404   ? "no such endpoint: " + req.method + " " + req.path
                        : res.status == 413 ? "the body is larger than the server accepts"
                        : res.status == 405 ? "method not allowed"
                                            : "HTTP error " + std::to_string(res.status);
      res.set_content(dump(error_json(Refusal{res.status, "invalid_request_error", msg})), "application/json");
    });
    http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "unknown";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      send_error(res, Refusal{500, "internal_error", "internal error: " + what});
    });
    http.Get("/health", [](const httplib::Request&, httplib::Response& res) { res.set_content("{\"status\":\"ok\"}", "application/json"); });
    http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      json m = {{"id", opts.model_name}, {"object", "model"}, {"created", 0}, {"owned_by", "tappa"},
                {"meta", {{"n_ctx", engine.n_ctx()}, {"n_vocab", tok.n_vocab()}}}};
      res.set_content(dump({{"object", "list"}, {"data", json::array({m})}}), "application/json");
    });
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) { res.set_content(metrics(), "text/plain; version=0.0.4"); });
    http.Post("/v1/completions", [this](const httplib::Request& q, httplib::Response& s) { handle_generate(q, s, false); });
    http.Post("/v1/chat/completions", [this](const httplib::Request& q, httplib::Response& s) { handle_generate(q, s, true); });
    http.Post("/tokenize", [this](const httplib::Request& req, httplib::Response& res) {
      try {
        const json b = json::parse(req.body);
        if (!b.is_object()) bad("", "the body must be a JSON object");
        check_fields(b, {"content", "add_special", "parse_special"});
        if (!present(b, "content") || !b["content"].is_string()) bad("content", "'content' must be a string");
        const auto ids = tok.encode(b["content"].get<std::string>(), get_bool(b, "add_special", true), get_bool(b, "parse_special", false));
        res.set_content(dump({{"tokens", ids}}), "application/json");
      } catch (const json::parse_error& e) {
        send_error(res, Refusal{400, "invalid_request_error", std::string("the body is not valid JSON: ") + e.what()});
      } catch (const BadField& e) {
        send_error(res, Refusal{e.status, "invalid_request_error", e.message}, e.param);
      }
    });
    http.Post("/detokenize", [this](const httplib::Request& req, httplib::Response& res) {
      try {
        const json b = json::parse(req.body);
        if (!b.is_object()) bad("", "the body must be a JSON object");
        check_fields(b, {"tokens"});
        if (!present(b, "tokens") || !b["tokens"].is_array()) bad("tokens", "'tokens' must be an array of token ids");
        std::vector<int32_t> ids;
        for (const json& x : b["tokens"]) {
          if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= tok.n_vocab())
            bad("tokens", "token ids must be integers in [0, " + std::to_string(tok.n_vocab()) + ")");
          ids.push_back(x.get<int32_t>());
        }
        res.set_content(dump({{"content", tok.decode(ids)}}), "application/json");
      } catch (const json::parse_error& e) {
        send_error(res, Refusal{400, "invalid_request_error", std::string("the body is not valid JSON: ") + e.what()});
      } catch (const BadField& e) {
        send_error(res, Refusal{e.status, "invalid_request_error", e.message}, e.param);
      }
    });
  }
};

Server::Server(Engine& engine, ServerOptions options) : impl_(std::make_unique<Impl>(engine, std::move(options))) {
  impl_->routes();
  Impl& s = *impl_;
  if (s.opts.port == 0) {
    s.port = s.http.bind_to_any_port(s.opts.host);
    if (s.port <= 0) throw Error("cannot listen on " + s.opts.host + " (any port)");
  } else {
    if (!s.http.bind_to_port(s.opts.host, s.opts.port))
      throw Error("cannot listen on " + s.opts.host + ":" + std::to_string(s.opts.port) + " (in use, or not an address of this machine)");
    s.port = s.opts.port;
  }
}

Server::~Server() { stop(); }

int Server::port() const { return impl_->port; }

void Server::run() { impl_->http.listen_after_bind(); }

void Server::stop() {
  impl_->http.stop();
  impl_->sched.stop();
}

}  // namespace tappa::server

#include "evalkv/runner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <set>

#include "evalkv/fidelity.h"
#include "evalkv/longbench.h"
#include "evalkv/metrics.h"
#include "evalkv/replay.h"
#include "evalkv/rng.h"
#include "evalkv/tasks.h"
#include "kv/host_kv_cache.h"
#include "kv/spec.h"
#include "tappa/engine.h"
#include "tappa/error.h"
#include "tappa/kv_policy.h"
#include "tappa/model.h"

namespace tappa::evalkv {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

constexpr const char* kFidelityMode = "continuation";

struct Group {
  std::string task;
  int length = 0;
  int sample = 0;
  std::string mode;
};

std::vector<Group> groups_of(const GridConfig& cfg) {
  std::vector<Group> g;
  for (const auto& t : cfg.tasks)
    for (int len : cfg.lengths)
      for (int s = 0; s < cfg.samples; ++s) {
        if (is_fidelity_task(t)) {
          g.push_back({t, len, s, kFidelityMode});
        } else {
          for (const auto& m : cfg.modes) g.push_back({t, len, s, m});
        }
      }
  return g;
}

struct CellSpec {
  MethodSpec method;
  int budget;  // 0: full cache
  int cache;   // index into cfg.cache_types
  std::string label;  // method label, "@TYPE" appended for a type other than f32
};

// Cells grouped by cache type (each type's prefill is made once and dropped after its cells).
std::vector<CellSpec> cells_of(const GridConfig& cfg) {
  std::vector<CellSpec> c;
  for (int t = 0; t < static_cast<int>(cfg.cache_types.size()); ++t) {
    const std::string& ct = cfg.cache_types[t];
    const auto label = [&](const MethodSpec& m) { return ct == "f32" ? m.label : m.label + "@" + ct; };
    std::vector<MethodSpec> methods;
    for (const auto& spec : cfg.methods) methods.push_back(parse_method_spec(spec));
    for (const auto& m : methods)
      if (m.is_full()) c.push_back({m, 0, t, label(m)});
    for (const auto& m : methods) {
      if (m.is_full()) continue;
      for (int b : cfg.budgets) c.push_back({m, b, t, label(m)});
    }
  }
  return c;
}

std::string key_of(const Group& g, const std::string& method, int budget) {
  return g.task + "|" + std::to_string(g.length) + "|" + std::to_string(g.sample) + "|" + g.mode + "|" + method + "|" +
         std::to_string(budget);
}

// Dataset name of a LongBench task: longbench_<dataset> reads <data>/longbench/<dataset>.jsonl,
// longbench:<path> a user file.
std::string longbench_path(const GridConfig& cfg, const std::string& task) {
  if (task.rfind("longbench:", 0) == 0) return task.substr(10);
  return cfg.data_dir + "/longbench/" + task.substr(10) + ".jsonl";
}
bool is_longbench(const std::string& task) {
  return task.rfind("longbench_", 0) == 0 || task.rfind("longbench:", 0) == 0;
}

void validate(const GridConfig& cfg) {
  if (cfg.methods.empty()) throw Error("no methods given");
  if (cfg.tasks.empty()) throw Error("no tasks given");
  if (cfg.lengths.empty()) throw Error("no lengths given");
  if (cfg.samples < 1) throw Error("--samples must be ≥ 1");
  bool any_compressing = false;
  for (const auto& m : cfg.methods) any_compressing |= !parse_method_spec(m).is_full();
  if (any_compressing && cfg.budgets.empty()) throw Error("no budgets given");
  for (int b : cfg.budgets)
    if (b <= 0) throw Error("budgets must be positive token counts, got " + std::to_string(b));
  for (int l : cfg.lengths)
    if (l < 64 || l > (1 << 20)) throw Error("lengths must be in [64, 1048576] tokens, got " + std::to_string(l));
  for (const auto& m : cfg.modes)
    if (m != "query-aware" && m != "query-agnostic")
      throw Error("unknown mode '" + m + "' (query-aware or query-agnostic)");
  if (cfg.modes.empty()) throw Error("no modes given");
  for (const auto& t : cfg.tasks)
    if (!is_ruler_task(t) && !is_fidelity_task(t) && !is_longbench(t))
      throw Error("unknown task '" + t + "' (known: " + [] {
        std::string s;
        for (const auto& n : ruler_task_names()) s += n + ", ";
        return s;
      }() + "longbench_<dataset>, longbench:<file.jsonl>, fidelity_wikitext, fidelity_essays)");
  if (cfg.fidelity_tokens < 2 || cfg.greedy_tokens < 1) throw Error("fidelity/greedy token counts must be ≥ 2 / ≥ 1");
  std::set<std::string> labels;
  for (const auto& m : cfg.methods)
    if (!labels.insert(m).second) throw Error("method '" + m + "' is listed twice");
  if (cfg.cache_types.empty()) throw Error("no cache types given");
  std::set<std::string> types;
  for (const auto& t : cfg.cache_types) {
    parse_cache_spec(t);
    if (!types.insert(t).second) throw Error("cache type '" + t + "' is listed twice");
  }
}

// The grid as run: fullkv (the reference) first if the methods do not list it.
GridConfig with_reference(const GridConfig& cfg_in) {
  GridConfig cfg = cfg_in;
  if (std::none_of(cfg.methods.begin(), cfg.methods.end(),
                   [](const std::string& m) { return parse_method_spec(m).is_full(); }))
    cfg.methods.insert(cfg.methods.begin(), "fullkv");
  return cfg;
}

// Attaches a KV policy to a sequence for a scope (nullptr: none) and always detaches it, so the
// sequence never keeps a pointer to a cell's compressor past the scope.
class PolicyScope {
 public:
  PolicyScope(Sequence& s, KvPolicy* p) : s_(s) { s_.set_policy(p); }
  ~PolicyScope() { s_.set_policy(nullptr); }
  PolicyScope(const PolicyScope&) = delete;
  PolicyScope& operator=(const PolicyScope&) = delete;

 private:
  Sequence& s_;
};

// What the cache holds once the cell's decoding is over (decode eviction bounds it by the layer
// budgets; without it the lists grow by one row per decoded token).
void record_cache_end(nlohmann::json& cell, const KvCache& cache, const kv::KvCompressor* comp, const ModelConfig& mc) {
  std::vector<int> rows(mc.n_layer, 0);
  int64_t total = 0;
  for (int l = 0; l < mc.n_layer; ++l)
    for (int h = 0; h < mc.n_head_kv; ++h) {
      rows[l] = std::max(rows[l], cache.length(l, h));
      total += cache.length(l, h);
    }
  cell["end_rows"] = total;
  cell["end_layer_rows"] = rows;  // longest list of each layer
  if (comp) {
    cell["decode_steps"] = comp->record().decode_steps;
    cell["decode_evicted"] = comp->record().decode_evicted;
  }
}

}  // namespace

std::vector<std::string> split_list(std::string_view s, char sep) {
  std::vector<std::string> out;
  size_t b = 0;
  while (b <= s.size()) {
    size_t e = s.find(sep, b);
    if (e == std::string_view::npos) e = s.size();
    std::string item(s.substr(b, e - b));
    const auto f = item.find_first_not_of(" \t");
    const auto l = item.find_last_not_of(" \t");
    if (f != std::string::npos) out.push_back(item.substr(f, l - f + 1));
    b = e + 1;
  }
  return out;
}

namespace {
}  // namespace

MethodSpec parse_method_spec(std::string_view spec) {
  MethodSpec m;
  m.label = std::string(spec);
  m.flags = kv::parse_spec(spec);
  return m;
}

void check_method_spec(std::string_view spec) { kv::parse_spec(spec); }

std::vector<std::string> expand_methods(std::string_view item) {
  if (item == "paper")
    return {"streamingllm:streaming-first=1:granularity=query-head", "h2o:h2o-official-mask=1:granularity=query-head",
            "snapkv:pool=max7:granularity=query-head", "pyramidkv:pool=max7:granularity=query-head",
            "cake:granularity=query-head", "tappa:granularity=query-head"};
  return {std::string(item)};
}

KvCacheType parse_cache_spec(std::string_view spec) {
  const auto parts = split_list(spec, ':');
  if (parts.empty()) throw Error("empty cache type");
  KvCacheType t;
  const auto types = split_list(parts[0], '/');
  const auto type = [&](const std::string& name) {
    const auto k = parse_kv_type(name);
    if (!k) throw Error("cache type '" + std::string(spec) + "': unknown type '" + name + "' (f32, f16, bf16, q8_0, q4_0)");
    return *k;
  };
  if (types.size() == 1) {
    t.k = t.v = type(types[0]);
  } else if (types.size() == 2) {
    t.k = type(types[0]);
    t.v = type(types[1]);
  } else {
    throw Error("cache type '" + std::string(spec) + "': expected TYPE or K/V");
  }
  for (size_t i = 1; i < parts.size(); ++i) {
    if (parts[i] == "rot=auto") t.rotation = KvRotation::automatic;
    else if (parts[i] == "rot=on") t.rotation = KvRotation::on;
    else if (parts[i] == "rot=off") t.rotation = KvRotation::off;
    else throw Error("cache type '" + std::string(spec) + "': unknown option '" + parts[i] + "' (rot=auto|on|off)");
  }
  return t;
}

nlohmann::json GridConfig::to_json() const {
  nlohmann::json j;
  j["model"] = model_path;
  j["methods"] = methods;
  j["budgets"] = budgets;
  j["tasks"] = tasks;
  j["lengths"] = lengths;
  j["modes"] = modes;
  j["samples"] = samples;
  j["seed"] = seed;
  j["fidelity_tokens"] = fidelity_tokens;
  j["greedy_tokens"] = greedy_tokens;
  j["longbench_max_new"] = longbench_max_new;
  j["longbench_chat"] = longbench_chat;
  if (cache_types != std::vector<std::string>{"f32"}) j["cache_types"] = cache_types;  // f32 only: as before
  return j;
}

int64_t grid_size(const GridConfig& cfg) {
  return static_cast<int64_t>(groups_of(cfg).size()) * static_cast<int64_t>(cells_of(cfg).size());
}

std::string cell_key(const nlohmann::json& c) {
  Group g{c.at("task").get<std::string>(), c.at("length").get<int>(), c.at("sample").get<int>(),
          c.at("mode").get<std::string>()};
  return key_of(g, c.at("method").get<std::string>(), c.at("budget").get<int>());
}

GridOrder grid_order(const GridConfig& cfg_in) {
  const GridConfig cfg = with_reference(cfg_in);
  GridOrder o;
  const auto groups = groups_of(cfg);
  const auto cells = cells_of(cfg);
  o.n_groups = static_cast<int64_t>(groups.size());
  for (size_t g = 0; g < groups.size(); ++g)
    for (const auto& c : cells) {
      o.keys.push_back(key_of(groups[g], c.label, c.budget));
      o.group.push_back(static_cast<int64_t>(g));
    }
  return o;
}

bool run_grid(const Model& model, const GridConfig& cfg_in, nlohmann::json& results,
              const std::function<void(const nlohmann::json&, bool)>& checkpoint, const RunControl& control,
              const std::function<bool(int64_t)>& owns_group, std::string* current) {
  validate(cfg_in);
  const GridConfig cfg = with_reference(cfg_in);
  const auto owned = [&](size_t gi) { return !owns_group || owns_group(static_cast<int64_t>(gi)); };

  const ModelConfig& mc = model.config();
  const Tokenizer& tok = model.tokenizer();
  const auto count = [&](std::string_view s) { return static_cast<int>(tok.encode(s, false, false).size()); };
  const int max_len = *std::max_element(cfg.lengths.begin(), cfg.lengths.end());
  EngineOptions eo;
  eo.n_threads = cfg.threads;
  eo.n_ctx = max_len + std::max({cfg.fidelity_tokens, cfg.greedy_tokens, 512}) + 64;
  if (eo.n_ctx > mc.n_ctx_train && mc.n_ctx_train > 0 && max_len > mc.n_ctx_train)
    throw Error("length " + std::to_string(max_len) + " exceeds the model's training context of " +
                std::to_string(mc.n_ctx_train) + " tokens");
  Engine engine(model, eo);

  if (!results.contains("cells")) results["cells"] = nlohmann::json::array();
  std::set<std::string> done;
  for (const auto& c : results["cells"]) done.insert(cell_key(c));

  const auto groups = groups_of(cfg);
  const auto cells = cells_of(cfg);
  int64_t pending = 0;
  for (size_t gi = 0; gi < groups.size(); ++gi)
    for (const auto& c : cells) pending += !owned(gi) || done.count(key_of(groups[gi], c.label, c.budget)) ? 0 : 1;
  control.progress(0, pending);
  int64_t n_done = 0;

  // Data that only depends on the task (loaded lazily).
  std::unique_ptr<Haystacks> hay;
  auto haystacks = [&]() -> const Haystacks& {
    if (!hay) hay = std::make_unique<Haystacks>(Haystacks::load(cfg.data_dir));
    return *hay;
  };
  std::map<std::string, std::vector<LongBenchRecord>> lb_records;
  std::map<std::string, std::vector<size_t>> lb_order;

  for (size_t gi = 0; gi < groups.size(); ++gi) {
    const Group& g = groups[gi];
    if (!owned(gi)) continue;
    bool any = false;
    for (const auto& c : cells) any |= !done.count(key_of(g, c.label, c.budget));
    if (!any) continue;
    if (control.cancelled()) break;
    if (current) *current = "sample " + g.task + "|" + std::to_string(g.length) + "|" + std::to_string(g.sample) + "|" + g.mode;
    const auto t_group = Clock::now();
    const bool fidelity = is_fidelity_task(g.task);

    // --- the sample ---
    TaskSample sample;
    std::vector<int32_t> prompt, tail, continuation;
    if (fidelity) {
      const std::string text = fidelity_text(haystacks(), g.task, g.length, g.sample, cfg.seed);
      std::vector<int32_t> all = tok.encode(text, true, false);
      if (static_cast<int>(all.size()) < g.length + cfg.fidelity_tokens)
        throw Error(g.task + ": text too short for " + std::to_string(g.length) + " + " +
                    std::to_string(cfg.fidelity_tokens) + " tokens");
      prompt.assign(all.begin(), all.begin() + g.length);
      continuation.assign(all.begin() + g.length, all.begin() + g.length + cfg.fidelity_tokens);
    } else {
      if (is_longbench(g.task)) {
        if (!lb_records.count(g.task)) {
          lb_records[g.task] = read_longbench_file(longbench_path(cfg, g.task));
          std::vector<size_t> order(lb_records[g.task].size());
          for (size_t i = 0; i < order.size(); ++i) order[i] = i;
          Rng r(mix_seed(cfg.seed, g.task, 0));
          r.shuffle(order);
          lb_order[g.task] = order;
        }
        const auto& recs = lb_records[g.task];
        const size_t idx = lb_order[g.task][static_cast<size_t>(g.sample) % recs.size()];
        auto cut = [&](std::string_view s, int head, int tail_from) {
          const auto t = tok.encode(s, false, false);
          std::vector<int32_t> a(t.begin(), t.begin() + std::min<size_t>(head, t.size()));
          std::vector<int32_t> b(t.begin() + std::min<size_t>(tail_from, t.size()), t.end());
          return tok.decode(a) + tok.decode(b);
        };
        sample = longbench_sample(recs[idx], g.task, g.sample, g.length, cfg.longbench_max_new, count, cut);
      } else {
        sample = generate_task(haystacks(), g.task, g.length, g.sample, cfg.seed, count);
      }
      const bool chat =
          is_longbench(g.task) && sample.chat_template && cfg.longbench_chat && !tok.chat_template().empty();
      if (chat) {
        // LongBench wraps the prompt in the chat template for chat models (its build_chat) except for
        // the few-shot and code datasets (TaskSample::chat_template): the user turn holds context and
        // question; the assistant turn starts after the question.
        const std::string marker = "\x01tappa-split\x01";
        const std::string wrapped = tok.apply_chat_template({{"user", marker}}, true);
        const size_t at = wrapped.find(marker);
        if (at == std::string::npos) throw Error("chat template dropped the message text");
        prompt = tok.encode(wrapped.substr(0, at), true, true);
        const auto ctx = tok.encode(sample.context, false, false);
        prompt.insert(prompt.end(), ctx.begin(), ctx.end());
        tail = tok.encode(sample.question, false, false);
        const auto post = tok.encode(wrapped.substr(at + marker.size()), false, true);
        tail.insert(tail.end(), post.begin(), post.end());
        const auto ap = tok.encode(sample.answer_prefix, false, false);
        tail.insert(tail.end(), ap.begin(), ap.end());
      } else {
        prompt = tok.encode(sample.context, true, false);
        tail = tok.encode(sample.question + sample.answer_prefix, false, false);
      }
      if (g.mode == "query-aware") {
        prompt.insert(prompt.end(), tail.begin(), tail.end());
        tail.clear();
      }
    }
    if (static_cast<int>(prompt.size() + tail.size()) + std::max(sample.max_new_tokens, cfg.fidelity_tokens) > eo.n_ctx)
      throw Error(g.task + ": prompt of " + std::to_string(prompt.size() + tail.size()) + " tokens exceeds the context");

    // --- the shared prefill and, for fidelity, the full-cache reference (always fp32) ---
    const Prefilled pre = prefill_capture(engine, prompt, 0, KvCacheType{});
    // The prefill of the cache type of the cells being run (made when its first cell comes).
    std::unique_ptr<Prefilled> pre_typed;
    int pre_typed_index = -1;
    const double prefill_s = seconds_since(t_group);
    std::vector<float> ref_rows;       // fidelity: full-cache logits for continuation[1..M)
    std::vector<int32_t> ref_greedy;   // fidelity: the full cache's greedy tokens
    const int V = mc.n_vocab;
    const int M = cfg.fidelity_tokens, G = cfg.greedy_tokens;
    if (fidelity) {
      auto full = restore_prefill(engine, pre);
      auto rows = engine.eval(*full, std::span<const int32_t>(continuation.data(), M - 1), true);
      ref_rows.assign(rows.begin(), rows.end());
      full = restore_prefill(engine, pre);
      std::span<const float> logits(pre.last_logits);
      for (int i = 0; i < G; ++i) {
        ref_greedy.push_back(argmax(logits));
        if (i + 1 < G) {
          const int32_t one[1] = {ref_greedy.back()};
          logits = engine.eval(*full, one);
        }
      }
    }

    for (const CellSpec& c : cells) {
      const std::string key = key_of(g, c.label, c.budget);
      if (done.count(key)) continue;
      if (control.cancelled()) break;
      if (current) *current = "cell " + key;
      const auto t0 = Clock::now();
      const std::string& cache_name = cfg.cache_types[c.cache];
      const KvCacheType cache_type = parse_cache_spec(cache_name);
      if (!(cache_type == KvCacheType{}) && pre_typed_index != c.cache) {
        pre_typed.reset();
        pre_typed = std::make_unique<Prefilled>(prefill_capture(engine, prompt, 0, cache_type));
        pre_typed_index = c.cache;
      }
      const Prefilled& cp = cache_type == KvCacheType{} ? pre : *pre_typed;
      nlohmann::json cell;
      cell["task"] = g.task;
      cell["length"] = g.length;
      cell["sample"] = g.sample;
      cell["mode"] = g.mode;
      cell["method"] = c.label;
      cell["budget"] = c.budget;
      if (cache_name != "f32") {
        cell["base_method"] = c.method.label;
        cell["cache"] = cache_name;
      }

      std::unique_ptr<kv::KvCompressor> comp;
      if (!c.method.is_full()) {
        kv::CompressorFlags f = c.method.flags;
        f.budget = c.budget;
        comp = std::make_unique<kv::KvCompressor>(model, kv::make_compressor_options(f));
      }
      const std::unique_ptr<Sequence> seq = restore_prefill(engine, cp, comp.get());
      const KvCache& cache = seq->cache();
      cell["kv_format"] = kv_format_name(cache.format());
      cell["kv_bytes"] = cache.bytes_used();  // rows held after the prompt × the format's row size
      cell["kv_row_bytes"] = cache.row_bytes();
      int64_t kept = 0;
      for (int l = 0; l < mc.n_layer; ++l)
        for (int h = 0; h < mc.n_head_kv; ++h) kept += cache.length(l, h);
      cell["n_prompt"] = static_cast<int>(pre.tokens.size());
      cell["kept_rows"] = kept;
      cell["kept_fraction"] = static_cast<double>(kept) / (static_cast<double>(pre.tokens.size()) * mc.n_layer * mc.n_head_kv);
      if (comp) {
        std::vector<int> lb;
        for (const auto& l : comp->record().layers) lb.push_back(l.budget);
        cell["layer_budgets"] = lb;
        cell["compressed"] = comp->record().compressed;
      }

      if (fidelity) {
        const std::unique_ptr<Sequence> greedy = seq->fork();  // the compressed state, for the greedy run
        auto rows = engine.eval(*seq, std::span<const int32_t>(continuation.data(), M - 1), true);
        FidelityAccumulator acc;
        for (int i = 0; i < M - 1; ++i)
          acc.add(std::span<const float>(ref_rows.data() + static_cast<size_t>(i) * V, V),
                  rows.subspan(static_cast<size_t>(i) * V, V), continuation[i + 1]);
        // Greedy agreement: decode greedily with the compressed cache, one token at a time like the
        // reference (a batched teacher-forced pass would differ from single-token decoding by
        // rounding, enough to flip near-tied argmaxes even for the full cache).
        int agree = 0;
        std::span<const float> glogits(cp.last_logits);
        {
          // One-token steps with the compressor attached: decode eviction as in generation.
          const PolicyScope attached(*greedy, comp.get());
          while (agree < G && argmax(glogits) == ref_greedy[agree]) {
            ++agree;
            if (agree == G) break;
            const int32_t one[1] = {ref_greedy[agree - 1]};
            glogits = engine.eval(*greedy, one);
          }
        }
        record_cache_end(cell, greedy->cache(), comp.get(), mc);
        cell["kl"] = acc.kl();
        cell["top1"] = acc.top1();
        cell["nll"] = acc.nll();
        cell["nll_full"] = acc.nll_full();
        cell["greedy_agree"] = agree;
        cell["greedy_tokens"] = G;
        cell["score"] = acc.top1();
      } else {
        std::span<const float> logits(cp.last_logits);
        // Query-agnostic: the question is appended uncompressed (kvpress's protocol). It is a
        // multi-token call, which an attached compressor would take for a new prompt to compress.
        if (!tail.empty()) logits = engine.eval(*seq, tail);
        // Generation runs with the compressor attached as the sequence's KV policy, so decode-time
        // eviction follows the method's setting (CAKE/TAPPA: every step cuts each list back to b_l + W).
        std::string pred;
        const int64_t pos_gen = seq->n_past();
        {
          const PolicyScope attached(*seq, comp.get());
          pred = greedy_generate(engine, *seq, tok, logits, sample.max_new_tokens, sample.stop_at_newline);
        }
        cell["decoded_tokens"] = seq->n_past() - pos_gen;  // one-token steps (the last token is not fed back)
        record_cache_end(cell, seq->cache(), comp.get(), mc);
        // LongBench: the record's dataset (a longbench:<file> task is named by its path).
        const std::string dataset = is_longbench(g.task) ? sample.dataset : g.task;
        cell["score"] = score_prediction(sample.metric, dataset, pred, sample.outputs, sample.all_classes);
        cell["metric"] = sample.metric;
        cell["prediction"] = pred;
        if (c.method.is_full()) cell["gold"] = sample.outputs.size() > 4 && sample.metric == "rouge"
                                                   ? nlohmann::json(std::vector<std::string>{sample.outputs[0]})
                                                   : nlohmann::json(sample.outputs);
        if (sample.depth >= 0) cell["depth"] = sample.depth;
      }
      cell["seconds"] = seconds_since(t0);
      if (c.method.is_full()) cell["prefill_seconds"] = prefill_s;
      results["cells"].push_back(std::move(cell));
      done.insert(key);
      ++n_done;
      control.progress(n_done, pending);
      checkpoint(results, false);
    }
    checkpoint(results, true);
  }
  return !control.cancelled();
}

}  // namespace tappa::evalkv

// `tappa serve` end to end on the default model: a Server on a loopback port (any free one), driven
// by a real HTTP client. Greedy chat and completion answers equal tappa::generate with the same
// prompt and settings, streamed or not; echo log probabilities are the prompt's own and their text
// offsets split context from continuation (what lm-eval's gguf model relies on); concurrent requests
// each get what they get alone; bad input gets a 4xx naming the problem while a good request beside
// it still succeeds; a client that leaves mid-stream has its generation cancelled.
#include <gtest/gtest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "tappa/engine.h"
#include "tappa/generate.h"
#include "tappa/model.h"
#include "tappa/server.h"
#include "test_util.h"

namespace tappa {
namespace {

using json = nlohmann::json;

struct Served {
  std::shared_ptr<Model> model = Model::load(test::default_model());
  Engine engine{model, EngineOptions{2, 1024, 512}};
  Engine solo{model, EngineOptions{2, 1024, 512}};  // reference answers, outside the server
  std::unique_ptr<server::Server> srv;
  std::thread th;
  explicit Served(const std::string& api_key = "", size_t kv_cap = size_t(512) << 20) {
    server::ServerOptions o;
    o.port = 0;
    o.model_name = "m";
    o.api_key = api_key;
    o.max_body_bytes = 64 << 10;
    o.scheduler.kv_cap_bytes = kv_cap;
    srv = std::make_unique<server::Server>(engine, o);
    th = std::thread([this] { srv->run(); });
  }
  ~Served() {
    srv->stop();
    th.join();
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", srv->port());
    c.set_read_timeout(120);
    return c;
  }
  std::pair<int, json> post(const std::string& path, const std::string& body, const httplib::Headers& h = {}) const {
    auto c = client();
    auto r = c.Post(path, h, body, "application/json");
    if (!r) return {-1, nullptr};
    return {r->status, json::parse(r->body)};
  }
  GenerateResult reference_chat(const std::string& user, int max_tokens) {
    const Tokenizer& tok = model->tokenizer();
    GenerateOptions o;
    o.max_tokens = max_tokens;
    return generate(solo, tok.encode(tok.apply_chat_template({{"user", user}}, true), true, true), o);
  }
};

TEST(Server, ModelsAndHealth) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  Served s;
  auto c = s.client();
  auto r = c.Get("/v1/models");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(json::parse(r->body)["data"][0]["id"], "m");
  r = c.Get("/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  r = c.Get("/nope");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_TRUE(json::parse(r->body).contains("error"));
}

TEST(Server, GreedyChatEqualsGenerateStreamedOrNot) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  Served s;
  const GenerateResult ref = s.reference_chat("Name three colours.", 20);
  const std::string body = R"({"model":"m","messages":[{"role":"user","content":"Name three colours."}],"max_tokens":20,"temperature":0)";
  auto [st, j] = s.post("/v1/chat/completions", body + "}");
  ASSERT_EQ(st, 200) << j.dump();
  EXPECT_EQ(j["choices"][0]["message"]["content"], ref.text);
  EXPECT_EQ(j["choices"][0]["finish_reason"], finish_reason_name(ref.finish));
  EXPECT_EQ(j["usage"]["completion_tokens"], ref.tokens.size());
  EXPECT_EQ(j["usage"]["prompt_tokens"], ref.n_prompt);

  auto c = s.client();
  auto r = c.Post("/v1/chat/completions", body + R"(,"stream":true})", "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  std::string text, finish;
  bool done = false;
  size_t pos = 0;
  while ((pos = r->body.find("data: ", pos)) != std::string::npos) {
    const size_t end = r->body.find("\n\n", pos);
    const std::string d = r->body.substr(pos + 6, end - pos - 6);
    pos = end;
    if (d == "[DONE]") {
      done = true;
      break;
    }
    const json ch = json::parse(d);
    const json& delta = ch["choices"][0]["delta"];
    if (delta.contains("content")) text += delta["content"].get<std::string>();
    if (!ch["choices"][0]["finish_reason"].is_null()) finish = ch["choices"][0]["finish_reason"];
  }
  EXPECT_TRUE(done) << r->body;
  EXPECT_EQ(text, ref.text);
  EXPECT_EQ(finish, finish_reason_name(ref.finish));
}

TEST(Server, EchoLogprobsAreThePromptsAndOffsetsSplitTheContext) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  Served s;
  const std::string ctx = "The capital of France is", cont = " Paris";
  auto [st, j] = s.post("/v1/completions", json{{"prompt", ctx + cont}, {"max_tokens", 1}, {"echo", true},
                                                {"logprobs", 3}, {"temperature", 0}}.dump());
  ASSERT_EQ(st, 200) << j.dump();
  const json& lp = j["choices"][0]["logprobs"];
  const Tokenizer& tok = s.model->tokenizer();
  const auto ids = tok.encode(ctx + cont, true, false);
  ASSERT_EQ(lp["tokens"].size(), ids.size() + 1) << "every prompt token, then the generated one";
  EXPECT_TRUE(lp["token_logprobs"][0].is_null());
  // The reference: the prompt's log probabilities from generate().
  GenerateOptions o;
  o.max_tokens = 0;
  o.prompt_logprobs = true;
  o.logprobs = 3;
  const GenerateResult ref = generate(s.solo, ids, o);
  ASSERT_EQ(ref.prompt_logprobs.size(), ids.size() - 1);
  for (size_t i = 1; i < ids.size(); ++i)
    EXPECT_NEAR(lp["token_logprobs"][i].get<double>(), ref.prompt_logprobs[i - 1].logprob, 1e-6) << i;
  // lm-eval's gguf split: the first token whose offset reaches len(context) starts the continuation.
  size_t idx = 0;
  while (lp["text_offset"][idx].get<size_t>() < ctx.size()) ++idx;
  std::string continuation;
  for (size_t i = idx; i + 1 < lp["tokens"].size(); ++i) continuation += lp["tokens"][i].get<std::string>();
  EXPECT_EQ(continuation, cont);
  const std::string text = j["choices"][0]["text"];
  EXPECT_EQ(text.substr(0, ctx.size() + cont.size()), ctx + cont) << "echo returns the prompt first";
}

TEST(Server, ConcurrentRequestsEachGetTheirSoloAnswer) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  Served s;
  const std::vector<std::string> qs = {"Name a fruit.", "What is 2+2?", "Say hello.", "Name a planet.",
                                       "Write one word.", "What colour is the sky?"};
  std::vector<std::string> ref, got(qs.size());
  for (const auto& q : qs) ref.push_back(s.reference_chat(q, 16).text);
  std::vector<std::thread> ts;
  for (size_t i = 0; i < qs.size(); ++i)
    ts.emplace_back([&, i] {
      auto [st, j] = s.post("/v1/chat/completions", json{{"messages", {{{"role", "user"}, {"content", qs[i]}}}},
                                                         {"max_tokens", 16}, {"temperature", 0}}.dump());
      got[i] = st == 200 ? j["choices"][0]["message"]["content"].get<std::string>() : "HTTP " + std::to_string(st);
    });
  for (auto& t : ts) t.join();
  for (size_t i = 0; i < qs.size(); ++i) EXPECT_EQ(got[i], ref[i]) << qs[i];
}

TEST(Server, BadInputGetsA4xxAndOthersAreUndisturbed) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  Served s;
  // A good request runs while the bad ones arrive.
  std::string good;
  std::thread t([&] {
    auto [st, j] = s.post("/v1/chat/completions", R"({"messages":[{"role":"user","content":"Say hello."}],"max_tokens":24,"temperature":0})");
    good = st == 200 ? j["choices"][0]["message"]["content"].get<std::string>() : "HTTP " + std::to_string(st);
  });
  auto expect = [&](const std::string& body, int status, const std::string& param) {
    auto [st, j] = s.post("/v1/completions", body);
    EXPECT_EQ(st, status) << body << " -> " << j.dump();
    if (st > 0) {
      ASSERT_TRUE(j.contains("error")) << j.dump();
      EXPECT_FALSE(j["error"]["message"].get<std::string>().empty());
      if (!param.empty()) {
        EXPECT_EQ(j["error"]["param"], param) << j.dump();
      }
    }
  };
  expect("{not json", 400, "");
  expect("[1,2]", 400, "");
  expect(R"({"prompt":"hi","colour":"blue"})", 400, "colour");
  expect(R"({"prompt":"hi","max_tokens":-1})", 400, "max_tokens");
  expect(R"({"prompt":"hi","max_tokens":100000})", 400, "max_tokens");
  expect(R"({"prompt":"hi","temperature":"hot"})", 400, "temperature");
  expect(R"({"prompt":"hi","kv_method":"nosuch"})", 400, "kv_method");
  expect(R"({"prompt":"hi","kv_method":"tappa","kv_budget":0})", 400, "kv_budget");
  expect(R"({"prompt":"hi","kv_method":"tappa","kv_ratio":7})", 400, "kv_ratio");
  expect(R"({"prompt":"hi","logprobs":1000})", 400, "logprobs");
  expect(R"({"prompt":[999999999]})", 400, "prompt");
  expect(R"({"prompt":"hi","model":"gpt-4"})", 404, "model");
  expect(R"({"max_tokens":3})", 400, "prompt");
  expect(json{{"prompt", std::string(100 << 10, 'a')}}.dump(), 413, "");
  t.join();
  EXPECT_EQ(good, s.reference_chat("Say hello.", 24).text);
}

TEST(Server, ApiKeyIsRequiredWhenSet) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  Served s("sekrit");
  const std::string body = R"({"prompt":"Hi","max_tokens":2})";
  EXPECT_EQ(s.post("/v1/completions", body).first, 401);
  EXPECT_EQ(s.post("/v1/completions", body, {{"Authorization", "Bearer wrong"}}).first, 401);
  EXPECT_EQ(s.post("/v1/completions", body, {{"Authorization", "Bearer sekrit"}}).first, 200);
}

TEST(Server, ARequestLargerThanTheKvCapIsRefusedAndCompressionAdmitsIt) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  Served s("", size_t(16) << 20);  // 16 MiB: the default model holds 45 KiB per token uncompressed
  std::string prompt;
  for (int i = 0; i < 100; ++i) prompt += "The cat sat on the mat. ";  // ~700 tokens: ~31 MiB uncompressed
  auto [st, j] = s.post("/v1/completions", json{{"prompt", prompt}, {"max_tokens", 8}}.dump());
  EXPECT_EQ(st, 400) << j.dump();
  EXPECT_NE(j["error"]["message"].get<std::string>().find("cap"), std::string::npos) << j.dump();
  auto [st2, j2] = s.post("/v1/completions", json{{"prompt", prompt}, {"max_tokens", 8}, {"kv_method", "snapkv"},
                                                  {"kv_budget", 64}, {"temperature", 0}}.dump());
  EXPECT_EQ(st2, 200) << j2.dump();
  if (st2 == 200) {
    EXPECT_LT(j2["usage"]["kv_bytes_held"].get<double>(), j2["usage"]["kv_bytes_uncompressed"].get<double>());
  }
}

TEST(Server, ATokenIdPromptMayBeLongerThanTheBatchLimit) {
  // Up to 64 prompts per request, but one prompt of token ids is as long as the context allows.
  TAPPA_REQUIRE_MODEL(test::default_model());
  Served s;
  std::string text;
  for (int i = 0; i < 20; ++i) text += "The cat sat on the mat. ";
  const auto ids = s.model->tokenizer().encode(text, false, false);
  ASSERT_GT(ids.size(), 64u);
  auto [st, j] = s.post("/v1/completions", json{{"prompt", ids}, {"max_tokens", 2}, {"temperature", 0}}.dump());
  ASSERT_EQ(st, 200) << j.dump();
  EXPECT_GE(j["usage"]["prompt_tokens"].get<size_t>(), ids.size());
}

TEST(Server, AClientLeavingMidStreamCancelsItsGeneration) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  Served s;
  auto c = s.client();
  int chunks = 0;
  const std::string body = R"({"messages":[{"role":"user","content":"Tell a long story."}],"max_tokens":900,"ignore_eos":true,"stream":true})";
  // The receiver stops after a few chunks: the client closes the connection.
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/chat/completions";
  req.body = body;
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 4; };
  auto c2 = s.client();
  (void)c2.send(req);
  EXPECT_GE(chunks, 4);
  // The cancelled generation is counted within a few seconds, long before 900 tokens could be made.
  bool cancelled = false;
  for (int i = 0; i < 100 && !cancelled; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto m = c.Get("/metrics");
    cancelled = m && m->body.find("tappa_jobs_cancelled_total 1") != std::string::npos;
  }
  EXPECT_TRUE(cancelled);
}

}  // namespace
}  // namespace tappa

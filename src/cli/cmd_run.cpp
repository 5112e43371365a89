// tappa run — generate text from a prompt, streaming tokens as they come.
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "cli/common.h"
#include "tappa/engine.h"
#include "tappa/error.h"
#include "tappa/generate.h"
#include "tappa/prune.h"

namespace tappa::cli {

// The presets (the library's registry) and the budget units, for run, compress, bench and eval-kv --help.
std::string kv_methods_help() {
  std::string s = "KV-cache compression methods (--kv):\n";
  for (const KvMethodInfo& m : kv_presets()) {
    std::string name = m.name;
    name.resize(std::max<size_t>(name.size(), 19), ' ');
    s += "  " + name + " " + m.description + "\n";
  }
  s += "Budget: --budget C = tokens kept per layer on average, the window W included (the papers' unit);\n"
       "--ratio R = fraction of the prompt removed (kvpress's unit). C >= prompt length evicts nothing.\n";
  return s;
}

namespace {
// A double as the spec string carries it: the shortest text that reads back as the same value.
std::string exact(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}
}  // namespace

KvOptions KvFlags::options() const {
  KvOptions o;
  o.method = method;
  for (const auto& [key, value] : knobs) {
    if (value.find(':') != std::string::npos)
      throw Error("the value of the KV knob " + key + " must not contain ':', got '" + value + "'");
    o.method += ":" + key + "=" + value;
  }
  o.budget = budget;
  o.ratio = ratio;
  return o;
}

void add_kv_flags(CLI::App& cmd, KvFlags& f) {
  const auto knob = [&f](const char* key) {
    return [&f, key](const std::string& v) { f.knobs.emplace_back(key, v); };
  };
  const auto int_knob = [&f](const char* key) {
    return [&f, key](const int& v) { f.knobs.emplace_back(key, std::to_string(v)); };
  };
  const auto real_knob = [&f](const char* key) {
    return [&f, key](const double& v) { f.knobs.emplace_back(key, exact(v)); };
  };
  const auto bool_knob = [&f](const char* key) {
    return [&f, key](int64_t n) { f.knobs.emplace_back(key, n > 0 ? "1" : "0"); };
  };
  cmd.add_option("--kv", f.method, "KV-cache compression method (see the list below)")->capture_default_str();
  cmd.add_option_function<int>("--budget", [&f](const int& v) { f.budget = v; },
                               "KV budget: tokens kept per layer on average, window included");
  cmd.add_option_function<double>("--ratio", [&f](const double& v) { f.ratio = v; },
                                  "KV budget as a compression ratio: fraction of the prompt removed, in [0, 1)");
  cmd.add_option_function<int>("--kv-window", int_knob("window"), "Observation / protected window W (default 32)");
  cmd.add_option_function<std::string>("--alpha", knob("alpha"),
                                       "tappa: 'inf' (preference 1 - q-sim, default) or a number a (CAKE + a*(1 - q-sim))");
  cmd.add_option_function<double>("--gamma", real_knob("gamma"), "cake/tappa token score mean + gamma*variance (default 200)");
  cmd.add_option_function<std::string>("--pool", knob("pool"),
                                       "Token-score pooling: none, avgK or maxK (default avg5; TAPPA's harness: max7)");
  cmd.add_flag_function("--cascading,!--no-cascading", bool_knob("cascading"),
                        "cake/tappa/tappa-head: re-allocate after every layer during prefill (default on)");
  cmd.add_flag_function("--decode-evict,!--no-decode-evict", bool_knob("decode-evict"),
                        "Evict while decoding (CAKE's rule: keep b_l + W per layer; default on for cake/tappa/tappa-head)");
  cmd.add_option_function<int>("--decode-evict-every", int_knob("decode-evict-every"),
                               "Decode eviction in batches: let a list grow to b + W + K - 1 rows, then cut it to "
                               "b + W (default 1: CAKE's one row per step)");
  cmd.add_option_function<int>("--n-sink", int_knob("n-sink"),
                               "streamingllm / expected-attention: attention sinks kept (default 4)");
  cmd.add_flag_function("--streaming-first", bool_knob("streaming-first"),
                        "streamingllm: keep the first C - W tokens (KVCache-Factory's baseline) instead of sinks + recent");
  cmd.add_option_function<int>("--h2o-rows", int_knob("h2o-rows"),
                               "h2o: last prompt queries whose attention is summed (default 512)");
  cmd.add_flag_function("--h2o-official-mask", bool_knob("h2o-official-mask"),
                        "h2o: mask only the W x W corner (the official code's quirk)");
  cmd.add_option_function<int>("--pyramid-beta", int_knob("pyramid-beta"), "pyramidkv: beta of the budget schedule (default 20)");
  cmd.add_option_function<std::string>("--tau", knob("tau"),
                                       "cake: preference exponents tau1,tau2 (default: the official table, else 1,1)");
  cmd.add_option_function<uint64_t>("--kv-seed", [&f](const uint64_t& v) { f.knobs.emplace_back("seed", std::to_string(v)); },
                                    "random: seed (default 0)");
  cmd.add_option_function<double>("--min-head-frac", real_knob("min-head-frac"),
                                  "tappa-head: each KV head keeps at least this fraction of the layer budget (default 0.2)");
  cmd.add_flag_function("--snapkv-mean", bool_knob("snapkv-mean"),
                        "snapkv/pyramidkv: mean over the window rows (kvpress) instead of the sum");
  cmd.add_option_function<int>("--ea-stat-rows", int_knob("ea-stat-rows"),
                               "expected-attention: last prompt queries used for the statistics (0: all, as kvpress)");
  cmd.add_option_function<int>("--ea-n-future", int_knob("ea-n-future"),
                               "expected-attention: future positions the query rotation is averaged over (default 512)");
  cmd.add_flag_function("--ea-covariance,!--no-ea-covariance", bool_knob("ea-covariance"),
                        "expected-attention: the covariance term k'Sk/(2d) (default on)");
  cmd.add_flag_function("--ea-vnorm,!--no-ea-vnorm", bool_knob("ea-vnorm"),
                        "expected-attention: multiply the scores by |v| (default on)");
  cmd.add_option_function<double>("--ea-epsilon", real_knob("ea-epsilon"), "expected-attention: (score + epsilon) * |v| (default 0)");
}

void add_cache_type_flags(CLI::App& cmd, CacheTypeFlags& f) {
  const std::vector<std::string> types{"f32", "f16", "bf16", "q8_0", "q4_0"};
  const std::string def = kv_type_name(EngineOptions{}.cache.k);
  cmd.add_option("--cache-type-k", f.k, "KV cache type of K (-ctk): f32, f16, bf16, q8_0, q4_0 (default " + def + ")")
      ->check(CLI::IsMember(types));
  cmd.add_option("--cache-type-v", f.v, "KV cache type of V (-ctv): f32, f16, bf16, q8_0, q4_0 (default " + def + ")")
      ->check(CLI::IsMember(types));
  cmd.add_option("--kv-rotation", f.rotation,
                 "Hadamard rotation of K/V rows before storing: auto (quantized K and V, as llama.cpp), on, off")
      ->capture_default_str()->check(CLI::IsMember({"auto", "on", "off"}));
}

KvCacheType cache_type_from_flags(const CacheTypeFlags& f) {
  KvCacheType t = EngineOptions{}.cache;
  if (!f.k.empty()) t.k = *parse_kv_type(f.k);
  if (!f.v.empty()) t.v = *parse_kv_type(f.v);
  t.rotation = f.rotation == "on" ? KvRotation::on : f.rotation == "off" ? KvRotation::off : KvRotation::automatic;
  return t;
}

void rewrite_llama_aliases(int argc, char** argv, std::vector<std::string>& storage, std::vector<char*>& out) {
  storage.assign(argv, argv + argc);
  for (std::string& a : storage) {
    for (const auto& [alias, name] : {std::pair{"-ctk", "--cache-type-k"}, std::pair{"-ctv", "--cache-type-v"}}) {
      const std::string al(alias);
      if (a == al) a = name;
      else if (a.rfind(al + "=", 0) == 0) a = std::string(name) + a.substr(al.size());
    }
  }
  out.clear();
  for (std::string& a : storage) out.push_back(a.data());
}

void register_run(CLI::App& app, int& rc) {
  auto* cmd = app.add_subcommand("run", "Generate text from a prompt (greedy by default; --temp for sampling)");
  cmd->footer(
      "Examples:\n"
      "  tappa run -p \"Once upon a time\" -n 64\n"
      "  tappa run -f article.txt -n 0            # prefill only, print timing\n"
      "  tappa run --chat -p \"What is RoPE?\" --temp 0.7 --seed 1\n"
      "  tappa run -f essay.txt -c 8192 -n 64 --kv tappa --budget 256   # compressed KV cache\n\n" +
      kv_methods_help());
  struct Opts {
    std::string model, prompt, file, system;
    int n_predict = 128;
    int threads = 0;
    int ctx = 4096;
    int batch = 512;
    float temp = 0.0f;
    int top_k = 40;
    float top_p = 0.95f;
    uint64_t seed = 0;
    bool chat = false;
    bool no_bos = false;
    bool parse_special = false;
    bool quiet = false;
    bool ignore_eos = false;
    KvFlags kv;
    CacheTypeFlags cache;
    std::string skip_layers;
  };
  auto o = std::make_shared<Opts>();
  add_model_option(*cmd, o->model);
  cmd->add_option("-p,--prompt", o->prompt, "Prompt text");
  cmd->add_option("-f,--file", o->file, "Read the prompt from a file");
  cmd->add_option("-n,--n-predict", o->n_predict, "Tokens to generate (0: only process the prompt)")
      ->capture_default_str()->check(CLI::Range(0, 1 << 24));
  cmd->add_option("-t,--threads", o->threads, "CPU threads (0: all)")->capture_default_str()->check(CLI::Range(0, 1024));
  cmd->add_option("-c,--ctx-size", o->ctx, "Context size in tokens (0: the model's training context)")
      ->capture_default_str()->check(CLI::Range(0, 1 << 24));
  cmd->add_option("-b,--batch-size", o->batch, "Prompt tokens per forward batch")->capture_default_str()->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--temp", o->temp, "Sampling temperature; 0 = greedy (deterministic)")->capture_default_str()->check(finite_range(0.0, 100.0));
  cmd->add_option("--top-k", o->top_k, "Keep the k most likely tokens before sampling (0: all)")->capture_default_str()->check(CLI::Range(0, 1 << 30));
  cmd->add_option("--top-p", o->top_p, "Nucleus sampling: keep the smallest set with this probability mass")
      ->capture_default_str()->check(finite_range(0.0, 1.0));
  cmd->add_option("-s,--seed", o->seed, "Random seed for sampling")->capture_default_str();
  cmd->add_flag("--chat", o->chat, "Wrap the prompt in the model's chat template as a user message");
  cmd->add_option("--system", o->system, "System message for --chat (default: the template's own)");
  cmd->add_flag("--no-bos", o->no_bos, "Do not add the BOS token even if the model asks for it");
  cmd->add_flag("--parse-special", o->parse_special, "Turn special-token text such as <|im_end|> into those tokens");
  cmd->add_flag("--ignore-eos", o->ignore_eos, "Keep generating past end-of-generation tokens");
  cmd->add_flag("-q,--quiet", o->quiet, "Print only the generated text (no prompt echo, no timing)");
  cmd->add_option("--skip-layers", o->skip_layers, "Skip these layers (in-memory pruning), e.g. 3,5,20-24");
  add_kv_flags(*cmd, o->kv);
  add_cache_type_flags(*cmd, o->cache);
  cmd->callback([o, &rc] {
    const KvOptions kv_opts = o->kv.options();
    validate_kv_options(kv_opts);
    std::string text = read_prompt(o->prompt, o->file);
    const auto model = Model::load(o->model);
    const Tokenizer& tok = model->tokenizer();
    bool parse_special = o->parse_special;
    if (o->chat) {
      std::vector<ChatMessage> msgs;
      if (!o->system.empty()) msgs.push_back({"system", o->system});
      msgs.push_back({"user", text});
      text = tok.apply_chat_template(msgs, /*add_generation_prompt=*/true);
      parse_special = true;
    }
    std::vector<int32_t> tokens = tok.encode(text, !o->no_bos, parse_special);
    if (tokens.empty()) throw Error("the prompt is empty (give text with -p or -f)");

    EngineOptions eo;
    eo.n_threads = o->threads;
    eo.n_ctx = o->ctx;
    eo.n_batch = o->batch;
    eo.cache = cache_type_from_flags(o->cache);
    Engine engine(model, eo);
    engine.set_skip_layers(prune::parse_layer_list(o->skip_layers, model->config().n_layer));
    if (static_cast<int64_t>(tokens.size()) + o->n_predict > engine.n_ctx())
      throw Error("prompt (" + std::to_string(tokens.size()) + " tokens) plus " + std::to_string(o->n_predict) +
                  " to generate exceeds the context of " + std::to_string(engine.n_ctx()) +
                  " tokens (raise -c/--ctx-size, at most the model's " + std::to_string(model->config().n_ctx_train) + ")");
    if (engine.n_ctx() > model->config().n_ctx_train)
      std::fprintf(stderr, "tappa: warning: context %d is longer than the model was trained on (%d)\n", engine.n_ctx(),
                   model->config().n_ctx_train);

    // The library's generation loop (include/tappa/generate.h): the KV method, the prompt, sampling,
    // end-of-generation; stepped here only to report the compression between the prompt and the text.
    GenerateOptions go;
    go.max_tokens = o->n_predict;
    go.sampling = SamplingParams{o->temp, o->top_k, o->top_p, o->seed};
    go.ignore_eos = o->ignore_eos;
    go.kv = kv_opts;
    Generator gen(engine, tokens, go);

    if (!o->quiet) {
      std::fputs(text.c_str(), stdout);
      std::fflush(stdout);
    }
    Generator* const one[1] = {&gen};
    bool reported = false;
    while (!gen.done()) {
      for (const auto& [g, piece] : step_all(engine, one)) {
        if (!reported && g->prompt_processed()) {
          reported = true;
          const GenerateResult pr = g->result();
          if (pr.kv && !o->quiet) {
            const KvRecord& r = *pr.kv;
            const double mib = 1048576.0, t_prompt = pr.prompt_seconds;
            std::fprintf(stderr,
                         "[kv %s: budget %d tokens/layer (ratio %.3f) over %d prompt tokens%s | KV bytes held before %.2f "
                         "MiB, after %.2f MiB (x%.4f; budget's memory %.2f MiB) | compression %.1f ms = %.2f%% of the "
                         "prefill]\n",
                         r.method.c_str(), r.capacity, r.ratio, r.n_prompt, r.compressed ? "" : ", nothing evicted",
                         r.bytes_held_before / mib, r.bytes_held_after / mib,
                         r.bytes_held_before ? static_cast<double>(r.bytes_held_after) / r.bytes_held_before : 1.0,
                         r.bytes_expected / mib, r.t_total() * 1e3, t_prompt > 0 ? 100.0 * r.t_total() / t_prompt : 0.0);
          }
        }
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
      }
    }
    const GenerateResult res = gen.result();
    const int generated = static_cast<int>(res.tokens.size());
    const double t_prompt = res.prompt_seconds, t_gen = res.generate_seconds;
    std::printf("\n");
    if (!o->quiet) {
      std::fprintf(stderr, "\n[prompt: %zu tokens in %.2f s, %.1f tok/s | generated: %d tokens in %.2f s, %.1f tok/s | "
                           "threads %d | kv cache %.1f MiB, %s]\n",
                   tokens.size(), t_prompt, tokens.size() / t_prompt, generated, t_gen,
                   generated > 0 ? generated / t_gen : 0.0, engine.n_threads(), res.kv_bytes_held / 1048576.0,
                   kv_format_name(gen.sequence().cache().format()).c_str());
      if (res.kv && res.kv->decode_steps > 0)
        std::fprintf(stderr, "[kv decode eviction: %lld steps, %lld rows evicted, %.1f ms]\n",
                     static_cast<long long>(res.kv->decode_steps), static_cast<long long>(res.kv->decode_evicted),
                     res.kv->t_decode * 1e3);
    }
    rc = 0;
  });
}

}  // namespace tappa::cli

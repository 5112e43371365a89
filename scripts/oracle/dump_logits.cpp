// dump_logits: tappa's oracle program. It runs a GGUF model through llama.cpp's public C API
// (include/llama.h only) and writes the logits llama.cpp computes as JSON, for tappa's tests to
// compare against. It is compiled against a llama.cpp build by scripts/oracle/build_oracle.sh; it is
// not part of tappa's own build.
//
// What it computes (see docs/ORACLE.md for the JSON format):
//   1. The token sequence: the prompt text tokenized by llama.cpp (add_special=true, parse_special=false
//      unless --parse-special), or ids given with --tokens. It must have at least --n-positions tokens
//      and is truncated to exactly that many.
//   2. Teacher-forced logits: all positions evaluated in ONE llama_decode call (one ubatch) with output
//      requested for every position; for each position the argmax and the top-k (id, logit) pairs, or
//      with --full-logits the whole logit row.
//   3. Greedy continuation: after clearing the memory, the first P tokens are decoded as one batch
//      (output for the last one only), then --n-gen tokens are generated one at a time by taking the
//      argmax of the raw logits (lowest id wins a tie), with no stopping at end-of-generation tokens.
//
// Build (what build_oracle.sh does):
//   c++ -std=c++17 -O2 dump_logits.cpp -I<llama.cpp>/include -I<llama.cpp>/ggml/include
//       -L<build>/bin -lllama -Wl,-rpath,<build>/bin -o dump_logits
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "llama.h"

namespace {

struct Options {
  std::string model;
  std::string prompt_file;
  std::string tokens_csv;   // alternative to prompt_file
  std::string out;          // "" = stdout
  std::string model_sha256; // recorded as given
  std::string oracle_tag;   // free text recorded in the JSON (e.g. "llama-cpp-python 0.3.36")
  std::string flash_attn = "auto";
  std::string kv_type = "f16";   // K/V cache element type: f16 (llama.cpp default) or f32
  int n_positions = -1;     // -1: 256 with a prompt file, all ids with --tokens; 0: all tokens
  int top_k = 40;
  int n_gen = 64;
  int greedy_prefix = -1;   // -1: min(n_tokens, 64)
  int n_threads = 1;
  int decimals = 4;
  bool full_logits = false;
  bool parse_special = false;
  bool add_special = true;
  bool verbose = false;
};

[[noreturn]] void die(const char* fmt, ...) {
  std::fprintf(stderr, "dump_logits: error: ");
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "\n");
  std::exit(1);
}

void usage() {
  std::fprintf(stderr,
      "usage: dump_logits -m MODEL (-f PROMPT.txt | --tokens ID,ID,...) [options]\n"
      "  -m, --model PATH          GGUF model\n"
      "  -f, --prompt-file PATH    prompt text, tokenized by llama.cpp\n"
      "      --tokens IDS          comma-separated token ids instead of a prompt file\n"
      "  -n, --n-positions N       positions to evaluate (default 256, or all ids with --tokens; 0 = all)\n"
      "  -k, --top-k K             top-k entries per position (default 40)\n"
      "  -g, --n-gen N             greedy tokens to generate (default 64; 0 = skip)\n"
      "  -p, --greedy-prefix P     prompt tokens the greedy run starts from (default min(n_tokens, 64))\n"
      "  -t, --threads N           threads (default 1)\n"
      "      --flash-attn MODE     auto|on|off (default auto, llama.cpp's default)\n"
      "      --kv-type T           K/V cache type f16|f32 (default f16, llama.cpp's default)\n"
      "      --full-logits         write every position's whole logit row (small vocabularies)\n"
      "      --decimals D          decimals for top-k logits (default 4)\n"
      "      --parse-special       tokenize with parse_special=true\n"
      "      --no-add-special      tokenize with add_special=false\n"
      "      --model-sha256 HEX    recorded in the JSON\n"
      "      --oracle-tag TEXT     recorded in the JSON\n"
      "  -o, --out PATH            output file (default stdout)\n"
      "  -v, --verbose             show llama.cpp's log\n");
}

int parse_int(const std::string& flag, const char* s) {
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < INT32_MIN || v > INT32_MAX) die("%s: not an integer: '%s'", flag.c_str(), s);
  return static_cast<int>(v);
}

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) die("%s needs a value", a.c_str());
      return argv[++i];
    };
    if (a == "-m" || a == "--model") o.model = next();
    else if (a == "-f" || a == "--prompt-file") o.prompt_file = next();
    else if (a == "--tokens") o.tokens_csv = next();
    else if (a == "-o" || a == "--out") o.out = next();
    else if (a == "-n" || a == "--n-positions") o.n_positions = parse_int(a, next());
    else if (a == "-k" || a == "--top-k") o.top_k = parse_int(a, next());
    else if (a == "-g" || a == "--n-gen") o.n_gen = parse_int(a, next());
    else if (a == "-p" || a == "--greedy-prefix") o.greedy_prefix = parse_int(a, next());
    else if (a == "-t" || a == "--threads") o.n_threads = parse_int(a, next());
    else if (a == "--decimals") o.decimals = parse_int(a, next());
    else if (a == "--flash-attn") o.flash_attn = next();
    else if (a == "--kv-type") o.kv_type = next();
    else if (a == "--full-logits") o.full_logits = true;
    else if (a == "--parse-special") o.parse_special = true;
    else if (a == "--no-add-special") o.add_special = false;
    else if (a == "--model-sha256") o.model_sha256 = next();
    else if (a == "--oracle-tag") o.oracle_tag = next();
    else if (a == "-v" || a == "--verbose") o.verbose = true;
    else if (a == "-h" || a == "--help") { usage(); std::exit(0); }
    else { usage(); die("unknown argument '%s'", a.c_str()); }
  }
  if (o.model.empty()) { usage(); die("--model is required"); }
  if (o.prompt_file.empty() == o.tokens_csv.empty()) { usage(); die("give exactly one of --prompt-file and --tokens"); }
  if (o.n_positions < -1 || o.top_k < 0 || o.n_gen < 0 || o.n_threads < 1) die("negative count or threads < 1");
  if (o.decimals < 0 || o.decimals > 12) die("--decimals must be in 0..12");
  if (o.flash_attn != "auto" && o.flash_attn != "on" && o.flash_attn != "off") die("--flash-attn must be auto, on or off");
  if (o.kv_type != "f16" && o.kv_type != "f32") die("--kv-type must be f16 or f32");
  return o;
}

// llama.cpp's log: hidden unless --verbose, but we watch for the line that says how "auto" flash
// attention was resolved, so the JSON can record it.
struct LogState {
  bool verbose = false;
  std::string fa_resolved;  // "enabled" / "disabled" / ""
};

void log_callback(enum ggml_log_level level, const char* text, void* user) {
  auto* st = static_cast<LogState*>(user);
  if (text != nullptr) {
    if (std::strstr(text, "Flash Attention enabled") != nullptr) st->fa_resolved = "enabled";
    else if (std::strstr(text, "Flash Attention not supported") != nullptr) st->fa_resolved = "disabled";
    if (st->verbose || level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
  }
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) die("cannot open '%s'", path.c_str());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<llama_token> parse_tokens(const std::string& csv, int n_vocab) {
  std::vector<llama_token> ids;
  std::string item;
  std::istringstream ss(csv);
  while (std::getline(ss, item, ',')) {
    size_t b = item.find_first_not_of(" \t\n");
    size_t e = item.find_last_not_of(" \t\n");
    if (b == std::string::npos) continue;
    int v = parse_int("--tokens", item.substr(b, e - b + 1).c_str());
    if (v < 0 || v >= n_vocab) die("--tokens: id %d out of range [0, %d)", v, n_vocab);
    ids.push_back(v);
  }
  if (ids.empty()) die("--tokens: no ids");
  return ids;
}

std::vector<llama_token> tokenize(const llama_vocab* vocab, const std::string& text, bool add_special, bool parse_special) {
  // First call with a generous buffer; a negative result is the size needed.
  std::vector<llama_token> ids(text.size() + 16);
  int n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), ids.data(),
                         static_cast<int32_t>(ids.size()), add_special, parse_special);
  if (n < 0) {
    ids.resize(static_cast<size_t>(-n));
    n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), ids.data(),
                       static_cast<int32_t>(ids.size()), add_special, parse_special);
  }
  if (n < 0) die("llama_tokenize failed (%d)", n);
  ids.resize(static_cast<size_t>(n));
  return ids;
}

// Argmax over raw logits; the lowest id wins a tie.
int argmax(const float* logits, int n_vocab) {
  int best = 0;
  for (int i = 1; i < n_vocab; ++i)
    if (logits[i] > logits[best]) best = i;
  return best;
}

// Top-k ids by logit, descending; ties broken by ascending id.
std::vector<int> top_k_ids(const float* logits, int n_vocab, int k) {
  k = std::min(k, n_vocab);
  std::vector<int> idx(static_cast<size_t>(n_vocab));
  std::iota(idx.begin(), idx.end(), 0);
  auto cmp = [&](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), cmp);
  idx.resize(static_cast<size_t>(k));
  return idx;
}

std::string json_escape(const std::string& s) {
  std::string r;
  for (unsigned char c : s) {
    switch (c) {
      case '"': r += "\\\""; break;
      case '\\': r += "\\\\"; break;
      case '\n': r += "\\n"; break;
      case '\r': r += "\\r"; break;
      case '\t': r += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          r += buf;
        } else {
          r += static_cast<char>(c);
        }
    }
  }
  return r;
}

std::string fmt_float(float v, int decimals) {
  if (!std::isfinite(v)) die("non-finite logit %f", static_cast<double>(v));
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, static_cast<double>(v));
  if (std::strcmp(buf, "-0") == 0 || std::strncmp(buf, "-0.", 3) == 0) {
    // "-0.0000" -> "0.0000" (keep a real negative like -0.0001)
    bool all_zero = true;
    for (const char* p = buf + 1; *p; ++p)
      if (*p != '0' && *p != '.') all_zero = false;
    if (all_zero) return std::string(buf + 1);
  }
  return buf;
}

std::string fmt_full(float v) {
  if (!std::isfinite(v)) die("non-finite logit %f", static_cast<double>(v));
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(v));
  return buf;
}

void decode_or_die(llama_context* ctx, llama_batch& batch, const char* what) {
  int rc = llama_decode(ctx, batch);
  if (rc != 0) die("llama_decode (%s) returned %d", what, rc);
}

void fill_batch(llama_batch& batch, const std::vector<llama_token>& ids, size_t begin, size_t end, int pos0, bool all_logits) {
  batch.n_tokens = 0;
  for (size_t i = begin; i < end; ++i) {
    int j = batch.n_tokens++;
    batch.token[j] = ids[i];
    batch.pos[j] = pos0 + static_cast<int>(i - begin);
    batch.n_seq_id[j] = 1;
    batch.seq_id[j][0] = 0;
    batch.logits[j] = all_logits || i + 1 == end;
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options opt = parse_args(argc, argv);
  LogState log_state;
  log_state.verbose = opt.verbose;
  llama_log_set(log_callback, &log_state);
  llama_backend_init();

  llama_model_params mparams = llama_model_default_params();
  mparams.n_gpu_layers = 0;
  llama_model* model = llama_model_load_from_file(opt.model.c_str(), mparams);
  if (model == nullptr) die("cannot load model '%s'", opt.model.c_str());
  const llama_vocab* vocab = llama_model_get_vocab(model);
  const int n_vocab = llama_vocab_n_tokens(vocab);

  // 1. Tokens.
  std::vector<llama_token> tokens;
  if (!opt.prompt_file.empty()) {
    tokens = tokenize(vocab, read_file(opt.prompt_file), opt.add_special, opt.parse_special);
  } else {
    tokens = parse_tokens(opt.tokens_csv, n_vocab);
  }
  const size_t n_tokenized = tokens.size();
  int n_pos = opt.n_positions;
  if (n_pos == -1) n_pos = opt.tokens_csv.empty() ? 256 : static_cast<int>(tokens.size());
  if (n_pos == 0) n_pos = static_cast<int>(tokens.size());
  if (static_cast<int>(tokens.size()) < n_pos)
    die("the prompt has %zu tokens, fewer than --n-positions %d", tokens.size(), n_pos);
  tokens.resize(static_cast<size_t>(n_pos));
  int prefix = opt.greedy_prefix < 0 ? std::min(n_pos, 64) : opt.greedy_prefix;
  if (opt.n_gen > 0 && (prefix < 1 || prefix > n_pos)) die("--greedy-prefix must be in 1..%d", n_pos);

  // 2. Context: one ubatch holds every position; room for the greedy run.
  llama_context_params cparams = llama_context_default_params();
  const int need_ctx = std::max(n_pos, prefix + opt.n_gen);
  cparams.n_ctx = static_cast<uint32_t>((need_ctx + 64 + 255) / 256 * 256);
  cparams.n_batch = static_cast<uint32_t>(std::max(n_pos, 32));
  cparams.n_ubatch = cparams.n_batch;
  cparams.n_seq_max = 1;
  cparams.n_threads = opt.n_threads;
  cparams.n_threads_batch = opt.n_threads;
  cparams.flash_attn_type = opt.flash_attn == "on"    ? LLAMA_FLASH_ATTN_TYPE_ENABLED
                            : opt.flash_attn == "off" ? LLAMA_FLASH_ATTN_TYPE_DISABLED
                                                      : LLAMA_FLASH_ATTN_TYPE_AUTO;
  cparams.type_k = opt.kv_type == "f32" ? GGML_TYPE_F32 : GGML_TYPE_F16;
  cparams.type_v = cparams.type_k;
  cparams.no_perf = true;
  llama_context* ctx = llama_init_from_model(model, cparams);
  if (ctx == nullptr) die("cannot create a llama context");
  std::string fa_resolved = opt.flash_attn == "on" ? "enabled" : opt.flash_attn == "off" ? "disabled"
                            : (log_state.fa_resolved.empty() ? "unknown" : log_state.fa_resolved);

  // 3. Teacher-forced logits for every position, one batch.
  llama_batch batch = llama_batch_init(std::max(n_pos, prefix), 0, 1);
  fill_batch(batch, tokens, 0, tokens.size(), 0, /*all_logits=*/true);
  decode_or_die(ctx, batch, "all positions");

  std::ostringstream js;
  js << "{\n";
  if (!opt.model_sha256.empty()) js << "\"model_sha256\": \"" << json_escape(opt.model_sha256) << "\",\n";
  {
    std::string m = opt.model;
    size_t slash = m.find_last_of('/');
    js << "\"model_file\": \"" << json_escape(slash == std::string::npos ? m : m.substr(slash + 1)) << "\",\n";
  }
  if (!opt.prompt_file.empty()) {
    std::string p = opt.prompt_file;
    size_t slash = p.find_last_of('/');
    js << "\"prompt_file\": \"" << json_escape(slash == std::string::npos ? p : p.substr(slash + 1)) << "\",\n";
  } else {
    js << "\"prompt_file\": null,\n";
  }
  js << "\"oracle\": {\"program\": \"dump_logits\", \"tag\": \"" << json_escape(opt.oracle_tag)
     << "\", \"n_threads\": " << opt.n_threads << ", \"flash_attn\": \"" << opt.flash_attn
     << "\", \"flash_attn_resolved\": \"" << fa_resolved << "\", \"type_k\": \"" << opt.kv_type << "\", \"type_v\": \"" << opt.kv_type << "\""
     << ", \"n_ctx\": " << llama_n_ctx(ctx) << ", \"n_ubatch\": " << llama_n_ubatch(ctx)
     << ", \"add_special\": " << (opt.add_special ? "true" : "false")
     << ", \"parse_special\": " << (opt.parse_special ? "true" : "false")
     << ", \"logit_decimals\": " << (opt.full_logits ? -1 : opt.decimals) << "},\n";
  js << "\"n_vocab\": " << n_vocab << ",\n";
  js << "\"n_tokens_prompt\": " << n_tokenized << ",\n";
  js << "\"n_positions\": " << n_pos << ",\n";
  js << "\"top_k\": " << (opt.full_logits ? 0 : opt.top_k) << ",\n";
  js << "\"tokens\": [";
  for (size_t i = 0; i < tokens.size(); ++i) js << (i ? "," : "") << tokens[i];
  js << "],\n";
  js << "\"positions\": [\n";
  for (int i = 0; i < n_pos; ++i) {
    const float* lg = llama_get_logits_ith(ctx, i);
    if (lg == nullptr) die("no logits for position %d", i);
    js << "{\"argmax\":" << argmax(lg, n_vocab);
    if (opt.full_logits) {
      js << ",\"logits\":[";
      for (int v = 0; v < n_vocab; ++v) js << (v ? "," : "") << fmt_full(lg[v]);
      js << "]";
    } else {
      js << ",\"top\":[";
      std::vector<int> top = top_k_ids(lg, n_vocab, opt.top_k);
      for (size_t j = 0; j < top.size(); ++j)
        js << (j ? "," : "") << "[" << top[j] << "," << fmt_float(lg[top[j]], opt.decimals) << "]";
      js << "]";
    }
    js << "}" << (i + 1 < n_pos ? ",\n" : "\n");
  }
  js << "]";

  // 4. Greedy continuation from the first `prefix` tokens.
  if (opt.n_gen > 0) {
    llama_memory_clear(llama_get_memory(ctx), true);
    fill_batch(batch, tokens, 0, static_cast<size_t>(prefix), 0, /*all_logits=*/false);
    decode_or_die(ctx, batch, "greedy prefix");
    std::vector<llama_token> gen;
    std::vector<float> margin;  // top-1 minus top-2 logit at each step: how robust the choice is
    const float* lg = llama_get_logits_ith(ctx, -1);
    for (int g = 0; g < opt.n_gen; ++g) {
      if (lg == nullptr) die("no logits during greedy step %d", g);
      llama_token next = argmax(lg, n_vocab);
      std::vector<int> top2 = top_k_ids(lg, n_vocab, 2);
      margin.push_back(top2.size() == 2 ? lg[top2[0]] - lg[top2[1]] : 0.0f);
      gen.push_back(next);
      if (g + 1 == opt.n_gen) break;
      std::vector<llama_token> one{next};
      fill_batch(batch, one, 0, 1, prefix + g, /*all_logits=*/true);
      decode_or_die(ctx, batch, "greedy step");
      lg = llama_get_logits_ith(ctx, -1);
    }
    js << ",\n\"greedy\": {\"prefix_len\": " << prefix << ", \"n_gen\": " << opt.n_gen
       << ", \"stop_at_eog\": false, \"tokens\": [";
    for (size_t i = 0; i < gen.size(); ++i) js << (i ? "," : "") << gen[i];
    js << "], \"margin\": [";
    for (size_t i = 0; i < margin.size(); ++i) js << (i ? "," : "") << fmt_float(margin[i], opt.decimals);
    js << "]}";
  }
  js << "\n}\n";

  llama_batch_free(batch);
  llama_free(ctx);
  llama_model_free(model);
  llama_backend_free();

  const std::string s = js.str();
  if (opt.out.empty()) {
    std::fwrite(s.data(), 1, s.size(), stdout);
  } else {
    std::string tmp = opt.out + ".tmp";
    FILE* f = std::fopen(tmp.c_str(), "wb");
    if (f == nullptr) die("cannot write '%s'", tmp.c_str());
    if (std::fwrite(s.data(), 1, s.size(), f) != s.size() || std::fclose(f) != 0) die("write to '%s' failed", tmp.c_str());
    if (std::rename(tmp.c_str(), opt.out.c_str()) != 0) die("cannot rename '%s' to '%s'", tmp.c_str(), opt.out.c_str());
  }
  return 0;
}

// dump_tensors: writes llama.cpp's intermediate tensors (through the public eval callback) so that
// tappa's ops can be checked one at a time against llama.cpp on llama.cpp's own inputs. A debugging
// aid for docs/ORACLE.md "Bit-level agreement"; not part of tappa's build or tests.
//
//   dump_tensors -m MODEL --tokens 1,2,3,... [--decode-extra K] [--layers 0,1] -o DIR
// evaluates the ids as one batch (f32 K/V, flash attention off, 1 thread), then K more tokens one at
// a time (ids repeated from the start of the list), and writes DIR/<call>/<name>.f32 for every
// f32/f16 tensor whose name ends in one of the requested layers' suffixes "-<il>" (plus
// inp_embd and result_norm), as [ne0 ne1 ne2 ne3 as int64] + ne0*ne1*ne2*ne3 floats in
// ne0-fastest order.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <sys/stat.h>
#include <vector>

#include "ggml.h"
#include "ggml-backend.h"
#include "llama.h"

namespace {

struct DumpState {
  std::string dir;
  std::set<std::string> suffixes;
  int call = 0;
};

bool wanted(const DumpState& st, const char* name) {
  std::string n = name;
  if (n == "inp_embd" || n == "result_norm") return true;
  auto dash = n.rfind('-');
  if (dash == std::string::npos) return false;
  return st.suffixes.count(n.substr(dash)) > 0;
}

bool on_tensor(ggml_tensor* t, bool ask, void* user) {
  auto* st = static_cast<DumpState*>(user);
  if (ask) return wanted(*st, t->name) && (t->type == GGML_TYPE_F32 || t->type == GGML_TYPE_F16);
  std::vector<uint8_t> raw(ggml_nbytes(t));
  ggml_backend_tensor_get(t, raw.data(), 0, raw.size());
  const int64_t n = ggml_nelements(t);
  std::vector<float> out(static_cast<size_t>(n));
  int64_t idx = 0;
  for (int64_t i3 = 0; i3 < t->ne[3]; ++i3)
    for (int64_t i2 = 0; i2 < t->ne[2]; ++i2)
      for (int64_t i1 = 0; i1 < t->ne[1]; ++i1)
        for (int64_t i0 = 0; i0 < t->ne[0]; ++i0) {
          const size_t off = i0 * t->nb[0] + i1 * t->nb[1] + i2 * t->nb[2] + i3 * t->nb[3];
          float v;
          if (t->type == GGML_TYPE_F32) std::memcpy(&v, raw.data() + off, 4);
          else { ggml_fp16_t h; std::memcpy(&h, raw.data() + off, 2); v = ggml_fp16_to_fp32(h); }
          out[idx++] = v;
        }
  std::string sub = st->dir + "/" + std::to_string(st->call);
  mkdir(sub.c_str(), 0755);
  std::string path = sub + "/" + t->name + ".f32";
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) { std::fprintf(stderr, "cannot write %s\n", path.c_str()); std::exit(1); }
  std::fwrite(t->ne, sizeof(int64_t), 4, f);
  std::fwrite(out.data(), sizeof(float), out.size(), f);
  std::fclose(f);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model, tokens_csv, dir = "dump", layers = "0,1";
  int extra = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "-m") model = argv[i + 1];
    else if (a == "--tokens") tokens_csv = argv[i + 1];
    else if (a == "-o") dir = argv[i + 1];
    else if (a == "--layers") layers = argv[i + 1];
    else if (a == "--decode-extra") extra = std::atoi(argv[i + 1]);
    else { std::fprintf(stderr, "unknown argument %s\n", a.c_str()); return 1; }
  }
  DumpState st;
  st.dir = dir;
  mkdir(dir.c_str(), 0755);
  for (size_t p = 0; p <= layers.size();) {
    size_t q = layers.find(',', p);
    if (q == std::string::npos) q = layers.size();
    st.suffixes.insert("-" + layers.substr(p, q - p));
    p = q + 1;
  }
  std::vector<llama_token> ids;
  for (size_t p = 0; p < tokens_csv.size();) {
    size_t q = tokens_csv.find(',', p);
    if (q == std::string::npos) q = tokens_csv.size();
    ids.push_back(std::atoi(tokens_csv.substr(p, q - p).c_str()));
    p = q + 1;
  }
  llama_backend_init();
  llama_model_params mp = llama_model_default_params();
  llama_model* m = llama_model_load_from_file(model.c_str(), mp);
  if (!m) return 1;
  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = 4096;
  cp.n_batch = cp.n_ubatch = 2048;
  cp.n_threads = cp.n_threads_batch = 1;
  cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  cp.type_k = GGML_TYPE_F32;
  cp.type_v = GGML_TYPE_F32;
  cp.cb_eval = on_tensor;
  cp.cb_eval_user_data = &st;
  llama_context* ctx = llama_init_from_model(m, cp);
  llama_batch batch = llama_batch_init(static_cast<int>(ids.size()), 0, 1);
  for (size_t i = 0; i < ids.size(); ++i) {
    batch.token[i] = ids[i]; batch.pos[i] = static_cast<int>(i); batch.n_seq_id[i] = 1;
    batch.seq_id[i][0] = 0; batch.logits[i] = 1;
  }
  batch.n_tokens = static_cast<int>(ids.size());
  if (llama_decode(ctx, batch) != 0) return 1;
  for (int e = 0; e < extra; ++e) {
    ++st.call;
    batch.n_tokens = 1;
    batch.token[0] = ids[e % ids.size()]; batch.pos[0] = static_cast<int>(ids.size()) + e; batch.logits[0] = 1;
    if (llama_decode(ctx, batch) != 0) return 1;
  }
  llama_batch_free(batch);
  llama_free(ctx);
  llama_model_free(m);
  return 0;
}

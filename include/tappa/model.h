// A loaded model: its configuration read from GGUF metadata, views of its weights inside the mapped
// file (never copied), and its tokenizer.
#pragma once
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tappa/gguf.h"
#include "tappa/tokenizer.h"

namespace tappa {

enum class Arch { Llama, Qwen2, Gemma3 };

// The gated feed-forward's activation: silu(gate) * up (llama, qwen2) or gelu_tanh(gate) * up (gemma3).
enum class FfnActivation { Silu, GeluTanh };

// How RoPE pairs the dimensions of a head. Norm: (x[2i], x[2i+1]) — llama.cpp's layout for the llama
// architecture, whose converter permutes Q/K rows to match it. Neox: (x[i], x[i + n_rot/2]) — qwen2.
enum class RopeLayout { Norm, Neox };

struct ModelConfig {
  std::string arch_name;  // general.architecture
  Arch arch = Arch::Llama;
  std::string name;       // general.name, if any
  int n_layer = 0;
  int n_embd = 0;
  int n_head = 0;
  int n_head_kv = 0;
  int head_dim = 0;
  int n_ff = 0;
  int n_vocab = 0;
  int n_ctx_train = 0;
  float rms_eps = 1e-5f;
  float rope_base = 10000.0f;
  float rope_freq_scale = 1.0f;  // 1 / linear scaling factor
  int n_rot = 0;                 // rotated dimensions per head (rope.dimension_count)
  RopeLayout rope_layout = RopeLayout::Norm;
  bool has_rope_freq_factors = false;  // rope_freqs.weight present (Llama 3.x frequency scaling)
  bool has_qkv_bias = false;
  bool tied_output = false;            // output projection is token_embd

  // Gemma 3 (defaults leave llama/qwen2 unchanged).
  FfnActivation ffn_act = FfnActivation::Silu;
  float embd_scale = 1.0f;        // token embeddings are multiplied by this (gemma3: sqrt(n_embd))
  float attn_scale = 0.0f;        // softmax scale of q.k; 0 means 1/sqrt(head_dim)
  bool has_qk_norm = false;       // RMSNorm over each head of Q and K before RoPE
  bool has_post_norms = false;    // RMSNorm of the attention and FFN outputs before the residual add
  float final_logit_softcap = 0;  // logits = c * tanh(logits / c) when > 0
  // Sliding-window (local) layers: a local layer's query at position p sees keys p - n_swa + 1 .. p.
  // swa_layers[l] != 0 marks layer l local; empty: every layer is global. Local layers rotate with
  // rope_base_local, global ones with rope_base.
  int n_swa = 0;
  std::vector<uint8_t> swa_layers;
  float rope_base_local = 10000.0f;

  bool is_local(int layer) const {
    return layer >= 0 && static_cast<size_t>(layer) < swa_layers.size() && swa_layers[layer] != 0;
  }
  // Keys visible to one query of this layer: n_swa for a local layer, 0 (no limit) for a global one.
  int window(int layer) const { return is_local(layer) ? n_swa : 0; }
  float softmax_scale() const { return attn_scale > 0 ? attn_scale : 1.0f / std::sqrt(static_cast<float>(head_dim)); }

  int n_group() const { return n_head / n_head_kv; }  // query heads per KV head
  // Angular frequency of RoPE channel m (0 <= m < n_rot/2), including freq factors and scaling.
  // Implemented in model/rope.cpp.
};

struct ModelWeights;  // internal: src/model/weights.h

class Model {
 public:
  // Opens, validates and maps the file. Throws tappa::Error with a one-line message on any problem
  // (unreadable file, unsupported architecture, missing or mis-shaped tensor, bad metadata).
  static std::shared_ptr<Model> load(const std::string& path);
  // A model of a named shape ("llama-3.1-8b", "qwen2.5-7b", "smollm2-135m", "gemma3-270m", and the
  // small "llama-tiny", "qwen2-tiny", "gemma3-tiny"; random_shapes() lists them) whose weights are
  // pseudo-random numbers drawn from `seed` (model/random_weights.h): speed at the papers' sizes
  // without their files, and end-to-end comparisons of backends on every architecture. With
  // host_weights the matrices are made in host memory (BF16) and every backend can run the model;
  // without, the matrices exist only as (seed, scale) and a GPU backend makes them in its own memory
  // (16 GB for llama-3.1-8b, never on the host); host backends refuse such a model. Such a model has
  // no file and no tokenizer (file() and tokenizer() throw). Throws tappa::Error on an unknown shape.
  static std::shared_ptr<Model> random(const std::string& shape, uint64_t seed = 1, bool host_weights = true);
  static std::vector<std::string> random_shapes();
  ~Model();

  const ModelConfig& config() const { return config_; }
  const GgufFile& file() const;
  const Tokenizer& tokenizer() const;
  bool has_file() const { return file_ != nullptr; }
  const ModelWeights& weights() const { return *weights_; }
  // Angular frequency of RoPE channel m as this model applies it (base, freq factors, scaling), for
  // the global layers; rope_inv_freq(layer) gives the one a given layer uses (local layers of gemma3
  // rotate with their own base).
  const std::vector<float>& rope_inv_freq() const { return rope_inv_freq_; }
  const std::vector<float>& rope_inv_freq(int layer) const {
    return config_.is_local(layer) ? rope_inv_freq_local_ : rope_inv_freq_;
  }

 private:
  explicit Model(std::unique_ptr<GgufFile> file);
  static std::unique_ptr<Model> load_unchecked(const std::string& path);  // load() minus the path prefixing
  void compute_rope_frequencies();
  std::unique_ptr<GgufFile> file_;  // nullptr: a random-weight model
  ModelConfig config_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<ModelWeights> weights_;
  std::vector<float> rope_inv_freq_;
  std::vector<float> rope_inv_freq_local_;
};

}  // namespace tappa

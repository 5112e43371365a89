// Model::load — reads the configuration from GGUF metadata and binds every weight tensor, checking
// its presence, shape and type so that the engine never meets a surprise at run time.
#include <algorithm>
#include <cmath>
#include <string>

#include "backend/cpu/matmul.h"
#include "io/memory_fit.h"
#include "model/weights.h"
#include "quant/quant.h"
#include "tappa/error.h"
#include "tappa/model.h"

namespace tappa {

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

class Binder {
 public:
  Binder(const GgufFile& f, std::vector<std::vector<float>>& owned, std::vector<std::vector<uint8_t>>& owned_bytes)
      : f_(f), owned_(owned), owned_bytes_(owned_bytes) {}

  const GgufTensorInfo& find(const std::string& name, const std::vector<int64_t>& shape) const {
    const GgufTensorInfo* t = f_.find_tensor(name);
    if (!t) throw Error(f_.path() + ": missing tensor '" + name + "'");
    if (t->shape != shape)
      throw Error(f_.path() + ": tensor '" + name + "' has shape " + shape_str(t->shape) + ", expected " +
                  shape_str(shape));
    return *t;
  }

  // A matrix used in matmul: shape {cols, rows}.
  WeightView matrix(const std::string& name, int64_t cols, int64_t rows) const {
    const GgufTensorInfo& t = find(name, {cols, rows});
    if (t.type == TensorType::Q5_0 && cols % 32 == 0) {
      // No Q5_0 kernel: the blocks are rewritten once as Q8_0, which is exact (quant.h) and costs
      // 34 instead of 22 bytes per 32 weights of memory outside the mapping.
      const size_t in_row = quant::row_bytes(TensorType::Q5_0, cols), out_row = quant::row_bytes(TensorType::Q8_0, cols);
      owned_bytes_.emplace_back(out_row * static_cast<size_t>(rows));
      uint8_t* dst = owned_bytes_.back().data();
      for (int64_t r = 0; r < rows; ++r) quant::repack_q5_0_as_q8_0(t.data + in_row * r, dst + out_row * r, cols);
      return WeightView{TensorType::Q8_0, dst, rows, cols};
    }
    if (!cpu::matmul_supports(t.type))
      throw Error(f_.path() + ": tensor '" + name + "' has type " + std::string(tensor_type_info(t.type).name) +
                  ", which tappa cannot compute with (supported: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q4_K Q5_K Q6_K)");
    return WeightView{t.type, t.data, rows, cols};
  }

  // A vector (norm weight, bias): converted to fp32 once if stored otherwise.
  const float* vector(const std::string& name, int64_t n, bool optional = false) const {
    const GgufTensorInfo* t = f_.find_tensor(name);
    if (!t) {
      if (optional) return nullptr;
      throw Error(f_.path() + ": missing tensor '" + name + "'");
    }
    if (t->shape != std::vector<int64_t>{n})
      throw Error(f_.path() + ": tensor '" + name + "' has shape " + shape_str(t->shape) + ", expected [" +
                  std::to_string(n) + "]");
    if (t->type == TensorType::F32) return reinterpret_cast<const float*>(t->data);
    if (!tensor_type_info(t->type).supported || n % tensor_type_info(t->type).block_size != 0)
      throw Error(f_.path() + ": tensor '" + name + "' has unsupported type " +
                  std::string(tensor_type_info(t->type).name));
    owned_.emplace_back(n);
    quant::dequantize_row(t->type, t->data, owned_.back().data(), n);
    return owned_.back().data();
  }

 private:
  const GgufFile& f_;
  std::vector<std::vector<float>>& owned_;
  std::vector<std::vector<uint8_t>>& owned_bytes_;
};

int get_int(const GgufFile& f, const std::string& key, std::optional<int> fallback = std::nullopt) {
  const GgufValue* v = f.find(key);
  if (!v) {
    if (fallback) return *fallback;
    throw Error(f.path() + ": missing metadata key '" + key + "'");
  }
  if (v->type == GgufType::ARRAY)
    throw Error(f.path() + ": metadata key '" + key + "' is a per-layer array; tappa supports a single value");
  const int64_t x = v->as_i64(f.path() + ": metadata key '" + key + "'");  // the message names the file
  if (x <= 0 || x > (int64_t{1} << 30))
    throw Error(f.path() + ": metadata key '" + key + "' has implausible value " + std::to_string(x));
  return static_cast<int>(x);
}

float get_float(const GgufFile& f, const std::string& key, float fallback) {
  const GgufValue* v = f.find(key);
  if (!v) return fallback;
  const double x = v->as_f64(f.path() + ": metadata key '" + key + "'");
  if (!std::isfinite(x)) throw Error(f.path() + ": metadata key '" + key + "' is not finite");
  return static_cast<float>(x);
}

// Gemma 3 specifics, from metadata where the file has them and otherwise the values llama.cpp uses
// (and Google's reference implementation defines): local layers are every layer except each 6th.
void read_gemma3_config(const GgufFile& f, ModelConfig& c) {
  const std::string a = c.arch_name + ".";
  c.embd_scale = std::sqrt(static_cast<float>(c.n_embd));
  // Gemma 3 scales queries by query_pre_attn_scalar^-1/2, which the GGUF does not store: head_dim for
  // every size except 27B (62 layers), where it is n_embd / n_head (gemma_pytorch config; llama.cpp).
  c.attn_scale = c.n_layer == 62 ? 1.0f / std::sqrt(static_cast<float>(c.n_embd / c.n_head))
                                 : 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  c.final_logit_softcap = get_float(f, a + "final_logit_softcapping", 0.0f);
  if (c.final_logit_softcap < 0) throw Error(f.path() + ": final_logit_softcapping must not be negative");
  const GgufValue* swa = f.find(a + "attention.sliding_window");
  const int64_t n_swa = swa ? swa->as_i64(a + "attention.sliding_window") : 0;
  if (n_swa < 0 || n_swa > (int64_t{1} << 30))
    throw Error(f.path() + ": metadata key '" + a + "attention.sliding_window' has implausible value " + std::to_string(n_swa));
  if (n_swa == 0) return;  // no sliding window: every layer is global
  c.n_swa = static_cast<int>(n_swa);
  c.rope_base_local = get_float(f, a + "rope.freq_base_swa", 10000.0f);
  if (c.rope_base_local <= 0) throw Error(f.path() + ": rope.freq_base_swa must be positive");
  c.swa_layers.assign(c.n_layer, 0);
  const std::string pkey = a + "attention.sliding_window_pattern";
  const GgufValue* pat = f.find(pkey);
  if (pat && pat->type == GgufType::ARRAY) {
    const GgufArray& arr = pat->as_array(pkey);
    if (arr.values.size() != static_cast<size_t>(c.n_layer))
      throw Error(f.path() + ": '" + pkey + "' has " + std::to_string(arr.values.size()) + " entries for " +
                  std::to_string(c.n_layer) + " layers");
    for (int l = 0; l < c.n_layer; ++l) c.swa_layers[l] = arr.values[l].as_bool(pkey) ? 1 : 0;
    return;
  }
  const int64_t period = pat ? pat->as_i64(pkey) : 6;
  if (period < 0 || period > c.n_layer + 1)
    throw Error(f.path() + ": '" + pkey + "' has implausible value " + std::to_string(period));
  // Period p: layers l with l % p < p - 1 are local, the last of each p is global (0: all local).
  for (int l = 0; l < c.n_layer; ++l) c.swa_layers[l] = (period == 0 || l % period < period - 1) ? 1 : 0;
}

}  // namespace

Model::Model(std::unique_ptr<GgufFile> file) : file_(std::move(file)) {}
Model::~Model() = default;

const GgufFile& Model::file() const {
  if (!file_) throw Error("this is a random-weight model (" + config_.name + "): it has no GGUF file");
  return *file_;
}

const Tokenizer& Model::tokenizer() const {
  if (!tokenizer_) throw Error("this is a random-weight model (" + config_.name + "): it has no tokenizer; give token ids");
  return *tokenizer_;
}

std::shared_ptr<Model> Model::load(const std::string& path) {
  // Every error names the file. Most messages below already start with it; a value-type error raised
  // deep inside a metadata reader (tokenizer, Gemma 3 config) does not, so it gets the path here.
  try {
    return load_unchecked(path);
  } catch (const Error& e) {
    // Anything that goes wrong loading a model is the file's problem (bad_file), whatever layer noticed.
    const std::string msg = e.what();
    if (msg.rfind(path + ": ", 0) == 0) throw Error(ErrorCode::bad_file, msg);
    throw Error(ErrorCode::bad_file, path + ": " + msg);
  }
}

std::unique_ptr<Model> Model::load_unchecked(const std::string& path) {
  std::unique_ptr<Model> m(new Model(std::make_unique<GgufFile>(GgufFile::open(path))));
  const GgufFile& f = *m->file_;
  ModelConfig& c = m->config_;
  io::check_fits_in_memory(f);  // before any weight is touched (reliability: a model too large for memory)

  const auto arch = f.get_string("general.architecture");
  if (!arch) throw Error(path + ": missing metadata key 'general.architecture'");
  c.arch_name = *arch;
  if (c.arch_name == "llama") {
    c.arch = Arch::Llama;
    c.rope_layout = RopeLayout::Norm;
  } else if (c.arch_name == "qwen2") {
    c.arch = Arch::Qwen2;
    c.rope_layout = RopeLayout::Neox;
    c.has_qkv_bias = true;
  } else if (c.arch_name == "gemma3") {
    c.arch = Arch::Gemma3;
    c.rope_layout = RopeLayout::Neox;
    c.ffn_act = FfnActivation::GeluTanh;
    c.has_qk_norm = true;
    c.has_post_norms = true;
  } else {
    throw Error(path + ": unsupported architecture '" + c.arch_name + "' (supported: llama, qwen2, gemma3)");
  }
  const std::string a = c.arch_name + ".";
  c.name = f.get_string("general.name").value_or("");
  c.n_layer = get_int(f, a + "block_count");
  // Each layer binds several tensors: a larger count is a lie that would size per-layer tables absurdly.
  // (At least 1 is let through so that a header-only file reports its first missing piece instead.)
  if (static_cast<size_t>(c.n_layer) > std::max<size_t>(f.tensors().size(), 1))
    throw Error(path + ": block_count " + std::to_string(c.n_layer) + " is larger than the file's " +
                std::to_string(f.tensors().size()) + " tensors");
  c.n_embd = get_int(f, a + "embedding_length");
  c.n_ff = get_int(f, a + "feed_forward_length");
  c.n_head = get_int(f, a + "attention.head_count");
  c.n_head_kv = get_int(f, a + "attention.head_count_kv", c.n_head);
  if (c.n_head % c.n_head_kv != 0)
    throw Error(path + ": head_count " + std::to_string(c.n_head) + " is not a multiple of head_count_kv " +
                std::to_string(c.n_head_kv));
  c.head_dim = get_int(f, a + "attention.key_length", c.n_embd / c.n_head);
  // Projection widths are n_head * head_dim in int: hostile metadata must not overflow them.
  if (int64_t{c.n_head} * c.head_dim > (int64_t{1} << 30))
    throw Error(path + ": head_count " + std::to_string(c.n_head) + " x key_length " + std::to_string(c.head_dim) +
                " is implausibly large");
  if (get_int(f, a + "attention.value_length", c.head_dim) != c.head_dim)
    throw Error(path + ": key_length != value_length is not supported");
  c.n_ctx_train = get_int(f, a + "context_length", 2048);
  c.rms_eps = get_float(f, a + "attention.layer_norm_rms_epsilon", 1e-5f);
  c.rope_base = get_float(f, a + "rope.freq_base", 10000.0f);
  c.n_rot = get_int(f, a + "rope.dimension_count", c.head_dim);
  if (c.n_rot > c.head_dim || c.n_rot % 2 != 0)
    throw Error(path + ": rope.dimension_count " + std::to_string(c.n_rot) + " does not fit head size " +
                std::to_string(c.head_dim));
  if (c.rope_base <= 0) throw Error(path + ": rope.freq_base must be positive");
  if (auto type = f.get_string(a + "rope.scaling.type"); type && *type != "none") {
    if (*type == "linear") {
      const float factor = get_float(f, a + "rope.scaling.factor", 1.0f);
      if (factor <= 0) throw Error(path + ": rope.scaling.factor must be positive");
      c.rope_freq_scale = 1.0f / factor;
    } else if (*type != "llama3") {  // llama3 scaling is carried by rope_freqs.weight
      throw Error(path + ": rope scaling type '" + *type + "' is not supported (supported: none, linear, llama3)");
    }
  }

  if (c.arch == Arch::Gemma3) read_gemma3_config(f, c);

  m->tokenizer_ = std::make_unique<Tokenizer>(Tokenizer::from_gguf(f));

  auto w = std::make_unique<ModelWeights>();
  Binder bind(f, w->owned, w->owned_bytes);
  const GgufTensorInfo* embd = f.find_tensor("token_embd.weight");
  if (!embd) throw Error(path + ": missing tensor 'token_embd.weight'");
  if (embd->shape.size() != 2 || embd->shape[0] != c.n_embd)
    throw Error(path + ": tensor 'token_embd.weight' has shape " + shape_str(embd->shape) + ", expected [" +
                std::to_string(c.n_embd) + ", n_vocab]");
  c.n_vocab = static_cast<int>(embd->shape[1]);
  if (c.n_vocab != m->tokenizer_->n_vocab())
    throw Error(path + ": token_embd.weight has " + std::to_string(c.n_vocab) + " rows but the tokenizer has " +
                std::to_string(m->tokenizer_->n_vocab()) + " tokens");
  w->token_embd = bind.matrix("token_embd.weight", c.n_embd, c.n_vocab);
  w->output_norm = bind.vector("output_norm.weight", c.n_embd);
  if (f.find_tensor("output.weight")) {
    w->output = bind.matrix("output.weight", c.n_embd, c.n_vocab);
  } else {
    c.tied_output = true;
    w->output = w->token_embd;
  }
  w->rope_freqs = bind.vector("rope_freqs.weight", c.n_rot / 2, /*optional=*/true);
  c.has_rope_freq_factors = w->rope_freqs != nullptr;

  const int q_dim = c.n_head * c.head_dim, kv_dim = c.n_head_kv * c.head_dim;
  w->layers.resize(c.n_layer);
  for (int l = 0; l < c.n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    LayerWeights& L = w->layers[l];
    L.attn_norm = bind.vector(p + "attn_norm.weight", c.n_embd);
    L.wq = bind.matrix(p + "attn_q.weight", c.n_embd, q_dim);
    L.wk = bind.matrix(p + "attn_k.weight", c.n_embd, kv_dim);
    L.wv = bind.matrix(p + "attn_v.weight", c.n_embd, kv_dim);
    L.wo = bind.matrix(p + "attn_output.weight", q_dim, c.n_embd);
    if (c.has_qkv_bias) {
      L.bq = bind.vector(p + "attn_q.bias", q_dim);
      L.bk = bind.vector(p + "attn_k.bias", kv_dim);
      L.bv = bind.vector(p + "attn_v.bias", kv_dim);
    } else {
      // Llama-family files may carry biases too; use them when present.
      L.bq = bind.vector(p + "attn_q.bias", q_dim, true);
      L.bk = bind.vector(p + "attn_k.bias", kv_dim, true);
      L.bv = bind.vector(p + "attn_v.bias", kv_dim, true);
    }
    L.ffn_norm = bind.vector(p + "ffn_norm.weight", c.n_embd);
    L.w_gate = bind.matrix(p + "ffn_gate.weight", c.n_embd, c.n_ff);
    L.w_up = bind.matrix(p + "ffn_up.weight", c.n_embd, c.n_ff);
    L.w_down = bind.matrix(p + "ffn_down.weight", c.n_ff, c.n_embd);
    if (c.has_qk_norm) {
      L.q_norm = bind.vector(p + "attn_q_norm.weight", c.head_dim);
      L.k_norm = bind.vector(p + "attn_k_norm.weight", c.head_dim);
    }
    if (c.has_post_norms) {
      L.post_attn_norm = bind.vector(p + "post_attention_norm.weight", c.n_embd);
      L.post_ffn_norm = bind.vector(p + "post_ffw_norm.weight", c.n_embd);
    }
  }
  m->weights_ = std::move(w);
  m->compute_rope_frequencies();
  return m;
}

void Model::compute_rope_frequencies() {
  const ModelConfig& c = config_;
  Model* m = this;
  m->rope_inv_freq_.resize(c.n_rot / 2);
  for (int i = 0; i < c.n_rot / 2; ++i) {
    double f_i = std::pow(static_cast<double>(c.rope_base), -2.0 * i / c.n_rot) * c.rope_freq_scale;
    if (m->weights_->rope_freqs) f_i /= m->weights_->rope_freqs[i];
    m->rope_inv_freq_[i] = static_cast<float>(f_i);
  }
  // Local (sliding-window) layers: their own base, no linear scaling (llama.cpp's freq_scale_swa = 1).
  m->rope_inv_freq_local_.resize(c.n_rot / 2);
  for (int i = 0; i < c.n_rot / 2; ++i)
    m->rope_inv_freq_local_[i] = static_cast<float>(std::pow(static_cast<double>(c.rope_base_local), -2.0 * i / c.n_rot));
}

}  // namespace tappa

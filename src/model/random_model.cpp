// Model::random — a model of a named shape with pseudo-random weights (see model.h and
// model/random_weights.h). The shapes are the published configurations (config.json of each model);
// the weights are uniform with a scale that keeps every product's output near unit variance, so the
// activations of a deep stack stay in the range real models have and the numbers a benchmark runs
// on are ordinary (never zeros, which run faster than real data on some hardware).
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "model/random_weights.h"
#include "model/weights.h"
#include "tappa/error.h"
#include "tappa/model.h"

namespace tappa {

namespace {

struct Shape {
  const char* name;
  Arch arch;
  int n_layer, n_embd, n_head, n_head_kv, head_dim, n_ff, n_vocab, n_ctx;
  float rope_base;
  bool llama3_rope;  // Llama 3.1 frequency factors (factor 8, low 1, high 4, original context 8192)
  bool tied;
  int n_swa = 0, swa_period = 0;  // gemma3
};

// Sizes from each model's config.json; the tiny ones exercise every code path of an architecture
// (head sizes 64, 128 and 256, grouped queries, biases, sliding windows) in milliseconds.
const Shape kShapes[] = {
    {"llama-3.1-8b", Arch::Llama, 32, 4096, 32, 8, 128, 14336, 128256, 131072, 500000.0f, true, false},
    {"qwen2.5-7b", Arch::Qwen2, 28, 3584, 28, 4, 128, 18944, 152064, 32768, 1000000.0f, false, false},
    {"smollm2-135m", Arch::Llama, 30, 576, 9, 3, 64, 1536, 49152, 8192, 100000.0f, false, true},
    {"gemma3-270m", Arch::Gemma3, 18, 640, 4, 1, 256, 2048, 262144, 32768, 1000000.0f, false, true, 512, 6},
    {"llama-tiny", Arch::Llama, 4, 512, 8, 2, 64, 1024, 1024, 4096, 500000.0f, true, false},
    {"qwen2-tiny", Arch::Qwen2, 4, 512, 4, 2, 128, 1024, 1024, 4096, 1000000.0f, false, false},
    {"gemma3-tiny", Arch::Gemma3, 4, 256, 2, 1, 256, 512, 1024, 4096, 1000000.0f, false, true, 16, 2},
};

// llama.cpp's convert script for Llama 3.1 (rope_freqs.weight): channel i's divisor.
std::vector<float> llama3_factors(int n_rot, float base) {
  const double factor = 8.0, low = 1.0, high = 4.0, orig = 8192.0;
  const double low_wavelen = orig / low, high_wavelen = orig / high;
  std::vector<float> f(n_rot / 2);
  for (int i = 0; i < n_rot / 2; ++i) {
    const double freq = std::pow(static_cast<double>(base), -2.0 * i / n_rot);
    const double wavelen = 2.0 * M_PI / freq;
    if (wavelen < high_wavelen) {
      f[i] = 1.0f;
    } else if (wavelen > low_wavelen) {
      f[i] = static_cast<float>(factor);
    } else {
      const double smooth = (orig / wavelen - low) / (high - low);
      f[i] = static_cast<float>(1.0 / ((1.0 - smooth) / factor + smooth));
    }
  }
  return f;
}

}  // namespace

std::vector<std::string> Model::random_shapes() {
  std::vector<std::string> v;
  for (const Shape& s : kShapes) v.push_back(s.name);
  return v;
}

std::shared_ptr<Model> Model::random(const std::string& shape, uint64_t seed, bool host_weights) {
  const Shape* sh = nullptr;
  for (const Shape& s : kShapes)
    if (shape == s.name) sh = &s;
  if (!sh) {
    std::string names;
    for (const Shape& s : kShapes) names += (names.empty() ? "" : ", ") + std::string(s.name);
    throw Error(ErrorCode::bad_input, "unknown random-weight shape '" + shape + "' (known: " + names + ")");
  }
  std::shared_ptr<Model> m(new Model(nullptr));
  ModelConfig& c = m->config_;
  c.arch = sh->arch;
  c.arch_name = sh->arch == Arch::Llama ? "llama" : sh->arch == Arch::Qwen2 ? "qwen2" : "gemma3";
  c.name = "random " + shape;
  c.n_layer = sh->n_layer;
  c.n_embd = sh->n_embd;
  c.n_head = sh->n_head;
  c.n_head_kv = sh->n_head_kv;
  c.head_dim = sh->head_dim;
  c.n_ff = sh->n_ff;
  c.n_vocab = sh->n_vocab;
  c.n_ctx_train = sh->n_ctx;
  c.rms_eps = sh->arch == Arch::Llama ? 1e-5f : 1e-6f;
  c.rope_base = sh->rope_base;
  c.n_rot = sh->head_dim;
  c.rope_layout = sh->arch == Arch::Llama ? RopeLayout::Norm : RopeLayout::Neox;
  c.has_rope_freq_factors = sh->llama3_rope;
  c.has_qkv_bias = sh->arch == Arch::Qwen2;
  c.tied_output = sh->tied;
  if (sh->arch == Arch::Gemma3) {
    c.ffn_act = FfnActivation::GeluTanh;
    c.embd_scale = std::sqrt(static_cast<float>(c.n_embd));
    c.attn_scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    c.has_qk_norm = true;
    c.has_post_norms = true;
    c.n_swa = sh->n_swa;
    c.rope_base_local = 10000.0f;
    c.swa_layers.assign(c.n_layer, 0);
    for (int l = 0; l < c.n_layer; ++l) c.swa_layers[l] = l % sh->swa_period < sh->swa_period - 1 ? 1 : 0;
  }

  auto w = std::make_unique<ModelWeights>();
  uint64_t next_id = 1;
  // Each tensor draws from its own stream: seed and tensor number mixed.
  auto stream = [&] { return random_weights::mix(seed * 1000003ull + next_id++); };
  auto matrix = [&](int64_t rows, int64_t cols, float half_width) {
    WeightView v{TensorType::BF16, nullptr, rows, cols};
    v.random_seed = stream();
    v.random_step = half_width / 8388608.0f;  // half_width * 2^-23 (exact)
    if (host_weights) {
      const size_t n = static_cast<size_t>(rows * cols);
      w->owned_bytes.emplace_back(n * 2);
      auto* dst = reinterpret_cast<uint16_t*>(w->owned_bytes.back().data());
      for (size_t i = 0; i < n; ++i) dst[i] = random_weights::weight_bits(v.random_seed, i, v.random_step);
      v.data = w->owned_bytes.back().data();
      v.random_seed = 0;
      v.random_step = 0.0f;
    }
    return v;
  };
  // Vectors live on the host whatever host_weights says (they are small): `center` ± half_width.
  auto vector = [&](int64_t n, float center, float half_width) {
    const uint64_t s = stream();
    w->owned.emplace_back(n);
    for (int64_t i = 0; i < n; ++i) w->owned.back()[i] = center + random_weights::value(s, i, half_width / 8388608.0f);
    return w->owned.back().data();
  };
  // U(-a, a) has variance a^2 / 3: a = sqrt(3 / cols) gives a unit-variance output from a unit input.
  auto unit = [](int64_t cols) { return std::sqrt(3.0f / static_cast<float>(cols)); };
  const int64_t E = c.n_embd, QD = int64_t{c.n_head} * c.head_dim, KD = int64_t{c.n_head_kv} * c.head_dim;
  // Tied models read logits through the embedding table: a smaller table keeps them near the spread
  // of an untied head's (a few units), so that the top token is neither a coin flip nor fixed.
  w->token_embd = matrix(c.n_vocab, E, sh->tied ? 3.0f * unit(E) : 1.0f);
  w->output_norm = vector(E, 1.0f, 0.2f);
  w->output = sh->tied ? w->token_embd : matrix(c.n_vocab, E, 3.0f * unit(E));
  if (sh->llama3_rope) {
    w->owned.push_back(llama3_factors(c.n_rot, c.rope_base));
    w->rope_freqs = w->owned.back().data();
  }
  w->layers.resize(c.n_layer);
  for (LayerWeights& L : w->layers) {
    L.attn_norm = vector(E, 1.0f, 0.2f);
    L.wq = matrix(QD, E, unit(E));
    L.wk = matrix(KD, E, unit(E));
    L.wv = matrix(KD, E, unit(E));
    L.wo = matrix(E, QD, unit(QD));
    if (c.has_qkv_bias) {
      L.bq = vector(QD, 0.0f, 0.2f);
      L.bk = vector(KD, 0.0f, 0.2f);
      L.bv = vector(KD, 0.0f, 0.2f);
    }
    L.ffn_norm = vector(E, 1.0f, 0.2f);
    L.w_gate = matrix(c.n_ff, E, unit(E));
    L.w_up = matrix(c.n_ff, E, unit(E));
    L.w_down = matrix(E, c.n_ff, unit(c.n_ff));
    if (c.has_qk_norm) {
      L.q_norm = vector(c.head_dim, 1.0f, 0.2f);
      L.k_norm = vector(c.head_dim, 1.0f, 0.2f);
    }
    if (c.has_post_norms) {
      L.post_attn_norm = vector(E, 1.0f, 0.2f);
      L.post_ffn_norm = vector(E, 1.0f, 0.2f);
    }
  }
  m->weights_ = std::move(w);
  m->compute_rope_frequencies();
  return m;
}

}  // namespace tappa

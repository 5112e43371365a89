// KvCompressor: see compressor.h and docs/KV_COMPRESSION.md ("Engine integration").
#include "kv/compressor.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>

#include "engine/sequence_impl.h"
#include "kv/host_kv_cache.h"
#include "tappa/engine.h"
#include "tappa/error.h"
#include "tappa/model.h"

namespace tappa::kv {

namespace {

[[noreturn]] void fail(const std::string& what) { throw Error(what); }

using Clock = std::chrono::steady_clock;
double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

bool preference_allocator(const Method& m) { return m.allocator->preference_based(); }

double parse_double(const std::string& flag, const std::string& s) {
  size_t used = 0;
  double v = 0.0;
  try {
    v = std::stod(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != s.size() || s.empty()) fail(flag + ": '" + s + "' is not a number");
  return v;
}

}  // namespace

const std::vector<int> KvCompressor::kEmpty;

CompressorOptions make_compressor_options(const CompressorFlags& f) {
  const Method& m = find_method(f.method);
  CompressorOptions c;
  c.method = m.name;
  c.opts = m.defaults;
  MethodOptions& o = c.opts;
  if (f.budget && f.ratio) fail("give either --budget (tokens per layer) or --ratio (compression ratio), not both");
  if (f.budget && *f.budget <= 0)
    fail("--budget must be a positive number of tokens per layer (window included), got " + std::to_string(*f.budget));
  if (f.ratio && !(*f.ratio >= 0.0 && *f.ratio < 1.0))
    fail("--ratio must be in [0, 1) (the fraction of the prompt removed), got " + std::to_string(*f.ratio));
  c.budget = f.budget;
  c.ratio = f.ratio;
  if (f.window) {
    if (*f.window < 1) fail("--kv-window must be at least 1, got " + std::to_string(*f.window));
    o.window = *f.window;
  }
  if (f.alpha) {
    const std::string& a = *f.alpha;
    if (a == "inf" || a == "infinity" || a == "Inf" || a == "INF") {
      o.alpha = std::numeric_limits<double>::infinity();
    } else {
      o.alpha = parse_double("--alpha", a);
      if (!(o.alpha >= 0.0)) fail("--alpha must be 'inf' or a number >= 0, got " + a);
    }
  }
  if (f.gamma) {
    if (!(*f.gamma >= 0.0) || !std::isfinite(*f.gamma)) fail("--gamma must be a finite number >= 0");
    o.gamma = *f.gamma;
  }
  if (f.pool) o.pool = parse_pooling(*f.pool);
  if (f.cascading) {
    if (*f.cascading && !preference_allocator(m))
      fail("--cascading applies to preference allocators (cake, tappa, tappa-head) only (" + m.name +
           " evicts each layer as soon as it is scored anyway)");
    o.cascading = *f.cascading;
  }
  if (f.decode_evict) o.decode_eviction = *f.decode_evict;
  if (f.n_sink) {
    if (*f.n_sink < 0) fail("--n-sink must be >= 0");
    o.n_sink = *f.n_sink;
    o.ea.n_sink = *f.n_sink;
  }
  o.streaming_keep_first = o.streaming_keep_first || f.streaming_keep_first;
  if (f.h2o_rows) {
    if (*f.h2o_rows < 1) fail("--h2o-rows must be >= 1");
    o.h2o_rows = *f.h2o_rows;
  }
  o.h2o_official_mask = o.h2o_official_mask || f.h2o_official_mask;
  if (f.pyramid_beta) {
    if (*f.pyramid_beta < 1) fail("--pyramid-beta must be >= 1");
    o.pyramid_beta = *f.pyramid_beta;
  }
  if (f.tau) {
    const std::string& t = *f.tau;
    const size_t comma = t.find(',');
    if (comma == std::string::npos) fail("--tau must be 'tau1,tau2', got '" + t + "'");
    CakeTau tau{parse_double("--tau", t.substr(0, comma)), parse_double("--tau", t.substr(comma + 1))};
    if (!(tau.tau1 > 0.0) || !(tau.tau2 > 0.0)) fail("--tau values must be positive");
    o.tau = tau;
  }
  if (f.seed) o.seed = *f.seed;
  if (f.min_head_frac) {
    if (!(*f.min_head_frac >= 0.0 && *f.min_head_frac <= 1.0)) fail("--min-head-frac must be in [0, 1]");
    o.min_head_frac = *f.min_head_frac;
  }
  o.snapkv_mean_rows = o.snapkv_mean_rows || f.snapkv_mean;
  if (f.ea_stat_rows) {
    if (*f.ea_stat_rows < 0) fail("--ea-stat-rows must be >= 0");
    c.ea_stat_rows = *f.ea_stat_rows;
  }
  if (f.decode_evict_every) {
    if (*f.decode_evict_every < 1) fail("--decode-evict-every must be >= 1");
    c.decode_evict_every = *f.decode_evict_every;
  }
  if (f.ea_n_future) {
    if (*f.ea_n_future < 1) fail("--ea-n-future must be >= 1");
    o.ea.n_future = *f.ea_n_future;
  }
  if (f.ea_covariance) o.ea.use_covariance = *f.ea_covariance;
  if (f.ea_vnorm) o.ea.use_vnorm = *f.ea_vnorm;
  if (f.ea_epsilon) {
    if (!(*f.ea_epsilon >= 0.0) || !std::isfinite(*f.ea_epsilon)) fail("--ea-epsilon must be a finite number >= 0");
    o.ea.epsilon = *f.ea_epsilon;
  }
  if (f.adakv_alpha) {
    if (!(*f.adakv_alpha >= 0.0 && *f.adakv_alpha <= 1.0)) fail("adakv-alpha must be in [0, 1]");
    o.adakv_alpha = *f.adakv_alpha;
  }
  if (f.granularity) o.granularity = *f.granularity;
  for (const auto& kv : f.extra) o.extra.push_back(kv);
  if (m.scorer->needs_replay()) {
    // Replay scorers evict once, after their replay (KvCompressor::replay): there is nothing to cascade.
    if (f.cascading && *f.cascading)
      fail("--cascading does not apply to " + std::string(m.scorer->name()) + " (it evicts once, after its replay)");
    o.cascading = false;
  }
  m.scorer->validate(o);
  m.allocator->validate(o);
  if (!m.is_none() && !c.budget && !c.ratio)
    fail("--kv " + m.name + " needs a budget: --budget N (tokens per layer, window included) or --ratio R");
  return c;
}

// ---------------------------------------------------------------------------------------------

KvCompressor::KvCompressor(const Model& model, CompressorOptions options)
    : model_(model), options_(std::move(options)), method_(&find_method(options_.method)), opts_(options_.opts) {
  const ModelConfig& c = model.config();
  n_layer_ = c.n_layer;
  n_head_ = c.n_head;
  n_head_kv_ = c.n_head_kv;
  n_lists_ = c.n_head_kv;
  head_dim_ = c.head_dim;
  if (options_.budget && options_.ratio) fail("give either a budget in tokens or a compression ratio, not both");
  if (options_.budget && *options_.budget <= 0)
    fail("KV budget must be a positive number of tokens per layer, got " + std::to_string(*options_.budget));
  if (options_.ratio && !(*options_.ratio >= 0.0 && *options_.ratio < 1.0))
    fail("KV compression ratio must be in [0, 1), got " + std::to_string(*options_.ratio));
  if (active() && !options_.budget && !options_.ratio)
    fail("KV method " + method_->name + " needs a budget (tokens per layer) or a compression ratio");
  if (opts_.window < 1) fail("KV window must be at least 1, got " + std::to_string(opts_.window));
  if (options_.decode_evict_every < 1) fail("decode_evict_every must be at least 1");
  if (opts_.cascading && !preference_allocator(*method_))
    fail("cascading applies to cake, tappa and tappa-head only");
  if (replay_scorer()) opts_.cascading = false;  // evicted once, after the replay
  skip_.assign(n_layer_, 0);
  for (int l : options_.skip_layers) {
    if (l < 0 || l >= n_layer_) fail("skipped layer " + std::to_string(l) + " does not exist");
    skip_[l] = 1;
  }
  if (std::count(skip_.begin(), skip_.end(), 0) == 0) fail("every layer is skipped");
  for (int l = 0; l < n_layer_; ++l) {
    if (skip_[l] || !c.is_local(l)) continue;
    skip_[l] = 1;
    ++n_local_;
  }
  local_rows_cap_ = std::max(c.n_swa - 1, 0);
  n_active_ = static_cast<int>(std::count(skip_.begin(), skip_.end(), 0));
  layers_.resize(n_layer_);
  record_.method = method_->name;
  record_.scorer = std::string(method_->scorer->name());
  record_.allocator = std::string(method_->allocator->name());
  record_.window = opts_.window;
  record_.cascading = opts_.cascading;
  record_.decode_eviction = opts_.decode_eviction && active();
}

KvCompressor::~KvCompressor() = default;

// Sums the attention rows the engine hands to observers (several threads at once, different
// (head, position) pairs: one lock per query head).
class KvCompressor::RowSum : public Observer {
 public:
  explicit RowSum(KvCompressor& c) : c_(c) {}
  bool wants_layer(int layer) override {
    return c_.hint_n_ > 0 && layer >= 0 && layer < c_.n_layer_ && !c_.skip_[layer];
  }
  bool wants_attention_row(int layer, int head, int64_t pos) override {
    const int64_t end = c_.hint_pos0_ + c_.hint_n_;
    return c_.hint_n_ > 0 && pos >= end - c_.rowsum_rows_ && pos < end;
  }
  void on_attention_row(int layer, int head, int64_t pos, const float* probs, int n) override {
    const auto t0 = Clock::now();
    if (head < 0 || head >= c_.n_head_ || n > c_.rowsum_stride_) return;  // not counted: fallback
    c_.rowsum_layer_.store(layer, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(c_.rowsum_mu_[head]);
      float* acc = c_.rowsum_acc_.data() + static_cast<size_t>(head) * c_.rowsum_stride_;
      for (int j = 0; j < n; ++j) acc[j] += probs[j];
    }
    c_.rowsum_count_.fetch_add(1, std::memory_order_relaxed);
    c_.rowsum_ns_.fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count(),
                            std::memory_order_relaxed);
  }

 private:
  KvCompressor& c_;
};

Observer* KvCompressor::observer() {
  // The engine's rows are exact-causal: with the official mask (only the W x W corner masked, earlier
  // rows see every key) h2o computes its rows itself (h2o_scores_streaming), so no observer.
  if (!is_h2o() || opts_.h2o_official_mask) return nullptr;
  if (!rowsum_) {
    rowsum_ = std::make_unique<RowSum>(*this);
    rowsum_mu_ = std::make_unique<std::mutex[]>(n_head_);
  }
  return rowsum_.get();
}

void KvCompressor::expect_prompt(int n_tokens, int64_t pos0) {
  hint_n_ = std::max(n_tokens, 0);
  hint_pos0_ = pos0;
  rowsum_rows_ = std::min(std::max(opts_.h2o_rows, opts_.window), hint_n_);
  rowsum_ns_ = 0;
  rowsum_count_ = 0;
  rowsum_layer_ = -1;
  if (is_h2o() && hint_n_ > 0) {
    rowsum_stride_ = pos0 + hint_n_;
    rowsum_acc_.assign(static_cast<size_t>(n_head_) * rowsum_stride_, 0.0f);
  }
}

int KvCompressor::capacity_for(int n_prompt) const {
  if (!active()) return std::max(n_prompt, 0);
  int C = options_.budget ? *options_.budget : capacity_from_ratio(*options_.ratio, n_prompt);
  if (n_local_ > 0 && n_active_ > 0) {
    // The budget is an average over every layer that holds a cache. Local layers hold their window
    // (min(N, window - 1) rows after the prompt) whatever the method; what they leave of their share
    // goes to the global layers, which the method then allocates as usual. A global layer never gets
    // less than the plain average, so with a budget below the window the local layers exceed their
    // share (they are never compressed below what their own attention sees; docs/KV_COMPRESSION.md).
    const int64_t total = static_cast<int64_t>(C) * (n_active_ + n_local_);
    const int64_t local_rows = static_cast<int64_t>(n_local_) * std::min(n_prompt, local_rows_cap_);
    C = static_cast<int>(std::max<int64_t>(C, (total - local_rows) / n_active_));
  }
  return C;
}

void KvCompressor::check(int n_prompt) const {
  if (!active()) return;
  const int C = capacity_for(n_prompt);
  const int W = opts_.window;
  const std::string what = options_.ratio ? "ratio " + std::to_string(*options_.ratio) + " keeps " + std::to_string(C) +
                                                " tokens per layer, which is"
                                          : "budget " + std::to_string(C) + " is";
  if (C < W && n_prompt > C)
    fail("KV " + what + " smaller than the window W = " + std::to_string(W) + " (the budget counts the window; the " +
         std::to_string(n_prompt) + "-token prompt needs compressing): raise the budget or lower --kv-window");
  if (C < W && opts_.decode_eviction)
    fail("KV " + what + " smaller than the window W = " + std::to_string(W) +
         " (decode eviction keeps budget tokens per layer, window included): raise the budget or lower --kv-window");
}

const std::vector<int>& KvCompressor::positions(int layer, int head) const {
  if (layer < 0 || layer >= n_layer_ || head < 0 || head >= n_lists_) return kEmpty;
  const auto& pos = layers_[layer].pos;
  return head < static_cast<int>(pos.size()) ? pos[head] : kEmpty;
}

std::span<const float> KvCompressor::kept_scores(int layer, int head) const {
  if (layer < 0 || layer >= n_layer_ || head < 0 || head >= n_lists_) return {};
  const auto& sc = layers_[layer].kept_scores;
  return head < static_cast<int>(sc.size()) ? std::span<const float>(sc[head]) : std::span<const float>();
}

int KvCompressor::decode_budget(int layer, int head) const {
  if (!active()) return kUnlimitedBudget;
  if (layer >= 0 && layer < n_layer_ && head >= 0 && planned_decode_) {
    const auto& d = layers_[layer].decode_budget;
    if (head < static_cast<int>(d.size())) return d[head];
  }
  if (options_.budget) return std::max((C_ > 0 ? C_ : *options_.budget) - opts_.window, 0);
  return kUnlimitedBudget;
}

int KvCompressor::prefill_query_rows() const {
  if (!active()) return opts_.window;  // the window q-sim of the record only
  const LayerNeeds needs = layer_needs(*method_, opts_, std::numeric_limits<int>::max() / 4);
  int rows = std::max(needs.query_rows, opts_.window);
  if (needs.pre_rope_queries)  // expected-attention's statistics: every prompt row, or the last N
    rows = options_.ea_stat_rows > 0 ? std::max(rows, options_.ea_stat_rows) : std::numeric_limits<int>::max() / 4;
  return rows;
}

bool KvCompressor::wants_decode_attention() const {
  if (awaiting_replay_) return true;  // on_decode_layer then says the replay is missing
  return active() && opts_.decode_eviction && (planned_decode_ || options_.budget.has_value());
}

// ---------------------------------------------------------------------------------------------

void KvCompressor::on_prefill_begin(int n_tokens, int64_t pos0) { begin_next_ = true; }

void KvCompressor::begin_prefill(const PrefillLayerView& view, KvCache& cache) {
  in_prefill_ = true;
  n_lists_ = cache.n_head_kv();
  const bool query_head = opts_.granularity == Granularity::query_head && active();
  if (active() && !query_head && n_lists_ != n_head_kv_)
    fail("this sequence's KV cache holds one list per query head (an earlier granularity=query-head compression): "
         "start a new sequence for kv-head granularity");
  compress_ = false;
  awaiting_replay_ = false;
  planned_decode_ = false;
  seen_.clear();
  prefs_.clear();
  const CompressionRecord keep_decode = record_;
  record_ = CompressionRecord{};
  record_.method = keep_decode.method;
  record_.scorer = keep_decode.scorer;
  record_.allocator = keep_decode.allocator;
  record_.window = opts_.window;
  record_.cascading = opts_.cascading;
  record_.decode_eviction = keep_decode.decode_eviction;
  record_.query_head = n_lists_ != n_head_kv_;
  record_.layers.assign(n_layer_, LayerRecord{});
  for (int l = 0; l < n_layer_; ++l) {
    record_.layers[l].layer = l;
    record_.layers[l].active = !skip_[l];
  }
  // Rows each list held before this call: layer view.layer already appended this call's tokens.
  int prev = -1;
  bool uniform = true;
  for (int l = 0; l < n_layer_ && uniform; ++l) {
    if (skip_[l]) continue;
    for (int h = 0; h < n_lists_; ++h) {
      const int len = cache.length(l, h) - (l == view.layer ? view.n_tokens : 0);
      if (prev < 0) prev = len;
      if (len != prev) uniform = false;
    }
  }
  if (prev < 0) prev = 0;
  N_ = prev + view.n_tokens;
  // "Before" is what the uncompressed cache holds for this prompt: every active list with N rows.
  // It is computed, not read from the cache, because the engine reserves each layer only when it
  // runs it, so with cascading compression the whole uncompressed cache never exists at once.
  if (uniform) {
    size_t lists = 0;
    for (int l = 0; l < n_layer_; ++l) lists += skip_[l] ? 0 : static_cast<size_t>(n_lists_);
    record_.bytes_held_before = lists * static_cast<size_t>(N_) * cache.row_bytes();
  } else {
    record_.bytes_held_before = cache.bytes_held();
  }
  W_ = opts_.window;
  C_ = capacity_for(N_);
  record_.n_prompt = N_;
  record_.capacity = C_;
  record_.ratio = ratio_from_capacity(C_, N_);
  // Positions of the rows held (absolute), reused from the previous call when they are known.
  for (int l = 0; l < n_layer_; ++l) {
    LayerState& st = layers_[l];
    st.pos.resize(n_lists_);
    st.kept_scores.assign(n_lists_, {});
    st.decode_budget.assign(n_lists_, kUnlimitedBudget);
    st.bytes_before.assign(n_lists_, 0);
    st.seen = false;
    for (int h = 0; h < n_lists_; ++h) {
      std::vector<int>& p = st.pos[h];
      if (static_cast<int>(p.size()) != prev) {
        p.resize(prev);
        for (int i = 0; i < prev; ++i) p[i] = static_cast<int>(view.pos0) - prev + i;
      }
      for (int i = 0; i < view.n_tokens; ++i) p.push_back(static_cast<int>(view.pos0) + i);
    }
  }

  if (!active()) return;
  check(N_);
  if (!options_.opts.tau) opts_.tau = cake_tau(cake_tau_key(model_.config().name), C_);
  opts_.ea.future_pos0 = view.pos0 + view.n_tokens;
  if (N_ <= C_) return;  // the budget holds the whole prompt: nothing to evict
  if (!uniform) {
    record_.skipped_reason = "the cache held lists of different lengths before this call";
    return;
  }
  const LayerNeeds needs = layer_needs(*method_, opts_, N_);
  if (view.n_rows < std::min(needs.query_rows, N_) || view.n_rows < std::min(W_, N_)) {
    record_.skipped_reason = "the call has fewer tokens (" + std::to_string(view.n_tokens) +
                             ") than the query rows the method needs";
    return;
  }
  record_.h2o_from_engine_rows = is_h2o() && rowsum_ != nullptr;
  ctx_ = BudgetContext{n_active_, N_, C_, W_};
  const std::vector<double> dummy(n_active_, 1.0);
  planned_ = plan_budgets(*method_, opts_, ctx_, dummy);
  compress_ = planned_.compress;
  if (compress_ && query_head && n_lists_ != n_head_) repeat_to_query_heads(cache);
}

// Query-head granularity (the TAPPA harness: repeat_kv, then one keep-set per query head): each KV
// head's list becomes G copies, one per query head of its group, before anything is scored. From here
// on the method sees H lists of group 1 — every scorer then scores each query head by its own queries,
// every allocator splits over H lists — and the engine appends each new K/V row to all G copies and
// attends with one query head per list. Later layers of this prompt get their rows G times as they run.
void KvCompressor::repeat_to_query_heads(KvCache& cache) {
  const int G = n_head_ / n_lists_;
  cache.repeat_lists(G);
  for (LayerState& st : layers_) {
    std::vector<std::vector<int>> pos(n_head_);
    for (int h = 0; h < n_head_; ++h) pos[h] = st.pos[h / G];
    st.pos = std::move(pos);
    st.kept_scores.assign(n_head_, {});
    st.decode_budget.assign(n_head_, kUnlimitedBudget);
    st.bytes_before.assign(n_head_, 0);
  }
  n_lists_ = n_head_;
  record_.query_head = true;
}

void KvCompressor::evict_layer(int layer, const std::vector<int>& head_budgets, KvCache& cache) {
  LayerState& st = layers_[layer];
  bool any = false;
  for (int kv = 0; kv < n_lists_; ++kv) {
    const int cur = cache.length(layer, kv);
    const int P = cur - W_;
    if (P <= 0 || head_budgets[kv] >= P) continue;  // a grown share: keep what is there
    std::vector<float>& sc = st.kept_scores[kv];
    if (static_cast<int>(sc.size()) != P) fail("internal: stored scores out of step with the cache");
    select_keep(sc, head_budgets[kv], W_, keep_);
    const size_t held0 = cache.bytes_held();
    cache.keep_rows(layer, kv, keep_);
    cache.shrink_to_fit(layer, kv);  // prefill: give the evicted rows' memory back now (decode keeps capacity)
    const size_t held1 = cache.bytes_held();
    if (st.bytes_before[kv] == 0) st.bytes_before[kv] = held0 - held1 + keep_.size() * cache.row_bytes();
    const int kept_prefix = static_cast<int>(keep_.size()) - W_;
    for (int j = 0; j < kept_prefix; ++j) sc[j] = sc[keep_[j]];
    sc.resize(kept_prefix);
    std::vector<int>& pos = st.pos[kv];
    if (static_cast<int>(pos.size()) == cur) {
      for (size_t j = 0; j < keep_.size(); ++j) pos[j] = pos[keep_[j]];
      pos.resize(keep_.size());
    }
    any = true;
  }
  if (any) ++record_.layers[layer].re_evictions;
}

void KvCompressor::on_prefill_layer(const PrefillLayerView& view, KvCache& cache) {
  const int l = view.layer;
  if (l < 0 || l >= n_layer_ || skip_[l]) return;
  // A new eval call (also after an exception left the previous one unfinished).
  // A new prefill: announced by on_prefill_begin (the engine always does), or — for a caller that
  // drives the hooks by hand without it — a layer that does not follow the last one seen.
  if (begin_next_ || !in_prefill_ || (!seen_.empty() && l <= seen_.back())) {
    begin_next_ = false;
    begin_prefill(view, cache);
  }
  const int idx = static_cast<int>(seen_.size());
  seen_.push_back(l);
  LayerState& st = layers_[l];
  st.seen = true;
  LayerRecord& rec = record_.layers[l];
  rec.n_tokens = cache.length(l, 0);
  record_.bytes_held_peak = std::max(record_.bytes_held_peak, cache.bytes_held());
  record_.bytes_peak_layerwise = std::max(record_.bytes_peak_layerwise, cache.bytes_used());

  const auto t0 = Clock::now();
  // Window q-similarity of every layer (the record; tappa's preference uses the same numbers).
  const int wrows = std::min(view.n_rows, W_ > 0 ? W_ : opts_.window);
  std::vector<double> head_qsim(n_lists_, 0.0);
  if (wrows >= 2 && view.q_post) {
    const HeadsView qwin = HeadsView::token_major(view.q_post, view.n_rows, view.n_head, view.head_dim).last_rows(wrows);
    head_qsim = group_qsim(qwin, n_lists_);
    rec.qsim = layer_qsim(qwin);
  }
  rec.heads.assign(n_lists_, HeadRecord{});
  for (int kv = 0; kv < n_lists_; ++kv) rec.heads[kv].qsim = head_qsim[kv];
  if (!compress_) {
    if (rowsum_ && rowsum_count_.load() > 0) {
      std::fill(rowsum_acc_.begin(), rowsum_acc_.end(), 0.0f);
      rowsum_count_ = 0;
      rowsum_layer_ = -1;
    }
    record_.t_score += seconds(t0, Clock::now());
    return;
  }

  // Score the layer.
  const ModelConfig& c = model_.config();
  const int N = cache.length(l, 0);
  kptr_.resize(n_lists_);
  vptr_.resize(n_lists_);
  for (int kv = 0; kv < n_lists_; ++kv) {
    kptr_[kv] = cache.keys(l, kv);
    vptr_[kv] = cache.values(l, kv);
  }
  // A cache stored in another format (f16, q8_0, …; rotated or not) has no fp32 rows to point at: the
  // rows the method reads are decoded into this compressor's scratch (once per layer and prompt, never
  // per decoded token), so the method scores exactly the keys and values attention will see.
  const LayerNeeds needs = layer_needs(*method_, opts_, N);
  for (int kv = 0; kv < n_lists_; ++kv) {
    const bool k_missing = needs.keys && !kptr_[kv], v_missing = needs.values && !vptr_[kv];
    if (!k_missing && !v_missing) continue;
    const size_t rows = static_cast<size_t>(N) * head_dim_;
    if (decoded_k_.size() < n_lists_ * rows) decoded_k_.resize(n_lists_ * rows);
    if (v_missing && decoded_v_.size() < n_lists_ * rows) decoded_v_.resize(n_lists_ * rows);
    float* k = k_missing ? decoded_k_.data() + kv * rows : nullptr;
    float* v = v_missing ? decoded_v_.data() + kv * rows : nullptr;
    cache.read(l, kv, 0, N, k, v);
    if (k) kptr_[kv] = k;
    if (v) vptr_[kv] = v;
  }
  LayerInputs in;
  const bool attention_only = method_->scorer->reads_window_attention();
  if (kptr_[0] == nullptr && attention_only) {
    // A device cache (GPU) and a scorer that reads keys only through the window attention: that
    // attention is computed on the device, and only its probabilities come to the host.
    in.group_attention = [&cache, l, this](const HeadsView& qwin, int kv, std::span<float> out) {
      const int G = qwin.n_heads / n_lists_, W = qwin.n_rows, D = qwin.dim;
      group_q_.resize(static_cast<size_t>(G) * W * D);
      for (int g = 0; g < G; ++g)
        for (int a = 0; a < W; ++a)
          std::memcpy(group_q_.data() + (static_cast<size_t>(g) * W + a) * D, qwin.row(kv * G + g, a), sizeof(float) * D);
      return cache.attention_rows(l, kv, group_q_.data(), G, W, 1.0f / std::sqrt(static_cast<float>(D)), out.data());
    };
  } else if (kptr_[0] == nullptr) {
    // A device cache (GPU): the scorers read host rows, so the layer's lists are copied out once.
    const size_t list = static_cast<size_t>(N) * head_dim_;
    host_rows_.resize(2 * list * n_lists_);
    for (int kv = 0; kv < n_lists_; ++kv) {
      float* k = host_rows_.data() + 2 * list * kv;
      cache.read(l, kv, 0, N, k, k + list);
      kptr_[kv] = k;
      vptr_[kv] = k + list;
    }
  }
  in.layer = l;
  in.queries = HeadsView::token_major(view.q_post, view.n_rows, view.n_head, view.head_dim);
  in.keys = HeadsView::per_head(kptr_.data(), n_lists_, N, head_dim_);
  in.values = HeadsView::per_head(vptr_.data(), n_lists_, N, head_dim_);
  if (view.q_pre && layer_needs(*method_, opts_, N).pre_rope_queries) {
    in.stat_queries = HeadsView::token_major(view.q_pre, view.n_rows, view.n_head, view.head_dim);
    in.stat_pos0 = view.pos0 + view.n_tokens - view.n_rows;
  }
  in.n_head = view.n_head;
  in.rope = RopeSpec{std::span<const float>(model_.rope_inv_freq()), c.n_rot, c.rope_layout == RopeLayout::Neox};
  const bool rows_summed = is_h2o() && rowsum_ && hint_n_ == view.n_tokens &&
                           hint_pos0_ == view.pos0 && rowsum_layer_.load() == l &&
                           rowsum_rows_ == std::min(std::max(opts_.h2o_rows, W_), N) &&
                           rowsum_count_.load() == static_cast<int64_t>(n_head_) * rowsum_rows_;
  if (rows_summed) {
    in.h2o_accumulated = rowsum_acc_.data();
    in.h2o_stride = rowsum_stride_;
  } else {
    record_.h2o_from_engine_rows = false;
  }
  st.scores.scratch.swap(attn_scratch_);  // one window-attention scratch for all layers
  score_layer(*method_, opts_, in, st.scores);
  st.scores.scratch.swap(attn_scratch_);
  rec.preference = st.scores.preference;
  for (int kv = 0; kv < n_lists_; ++kv) {
    const auto s = st.scores.head(kv);
    st.kept_scores[kv].assign(s.begin(), s.end());
    rec.heads[kv].preference =
        st.scores.head_preference.empty() ? st.scores.preference : st.scores.head_preference[kv];
  }
  // Only the shape and the head preferences are needed from here on (layer_head_budgets), unless the
  // allocator splits a layer by its scores (adakv).
  if (!method_->allocator->reads_scores()) std::vector<float>().swap(st.scores.scores);
  if (rowsum_ && rowsum_count_.load() > 0) {  // ready for the next layer's rows
    std::fill(rowsum_acc_.begin(), rowsum_acc_.end(), 0.0f);
    rowsum_count_ = 0;
    rowsum_layer_ = -1;
  }
  const auto t1 = Clock::now();
  record_.t_score += seconds(t0, t1);

  // Evict as early as the method allows (a replay scorer: only after its replay).
  if (replay_scorer()) {
    if (preference_allocator(*method_)) prefs_.push_back(st.scores.preference);
  } else if (!preference_allocator(*method_)) {
    evict_layer(l, layer_head_budgets(*method_, opts_, st.scores, planned_.prefill[idx]), cache);
  } else {
    prefs_.push_back(st.scores.preference);
    if (opts_.cascading) {
      const std::vector<int> shares = cascade_shares(*method_, opts_, ctx_, prefs_);
      for (int i = 0; i <= idx; ++i) {
        const int li = seen_[i];
        evict_layer(li, layer_head_budgets(*method_, opts_, layers_[li].scores, shares[i]), cache);
      }
    }
  }
  record_.t_evict += seconds(t1, Clock::now());
}

void KvCompressor::on_prefill_done(KvCache& cache) {
  if (!in_prefill_) return;
  in_prefill_ = false;
  if (compress_ && replay_scorer()) {
    // Scored placeholders only: the eviction waits for replay(), which needs the engine.
    awaiting_replay_ = true;
    record_.skipped_reason = "waiting for the context replay (KvCompressor::replay)";
    return;
  }
  finish_prefill(cache, false);
}

void KvCompressor::finish_prefill(KvCache& cache, bool evict_every_layer) {
  const auto t0 = Clock::now();
  record_.bytes_held_peak = std::max(record_.bytes_held_peak, cache.bytes_held());
  record_.bytes_peak_layerwise = std::max(record_.bytes_peak_layerwise, cache.bytes_used());
  const int n_seen = static_cast<int>(seen_.size());
  const auto evict_seen = [&] {
    for (int i = 0; i < n_seen; ++i)
      evict_layer(seen_[i], layer_head_budgets(*method_, opts_, layers_[seen_[i]].scores, planned_.prefill[i]), cache);
  };
  if (compress_ && preference_allocator(*method_)) {
    if (n_seen != n_active_)
      fail("KV compression: saw " + std::to_string(n_seen) + " layers, expected " + std::to_string(n_active_) +
           " (pass the engine's skipped layers to the compressor)");
    planned_ = plan_budgets(*method_, opts_, ctx_, prefs_);
    compress_ = planned_.compress;
    if (compress_) evict_seen();
  } else if (compress_ && evict_every_layer) {  // a replay scorer with budgets known up front
    evict_seen();
  }
  record_.compressed = compress_;

  // Decode budgets and the record.
  const size_t rb = cache.row_bytes();
  size_t expected = 0;
  for (int i = 0; i < n_seen; ++i) {
    const int l = seen_[i];
    LayerState& st = layers_[l];
    LayerRecord& rec = record_.layers[l];
    std::vector<int> heads;
    if (compress_) {
      heads = layer_head_budgets(*method_, opts_, st.scores, planned_.prefill[i]);
      const int d = planned_.decode[i];
      st.decode_budget = d == planned_.prefill[i] ? heads : layer_head_budgets(*method_, opts_, st.scores, d);
    } else {
      heads.assign(n_lists_, std::max(rec.n_tokens - W_, 0));
      st.decode_budget.assign(n_lists_, active() && C_ >= W_ ? C_ - W_ : kUnlimitedBudget);
    }
    rec.budget = 0;
    rec.kept = 0;
    rec.bytes_before = rec.bytes_after = 0;
    for (int kv = 0; kv < n_lists_; ++kv) {
      HeadRecord& h = rec.heads[kv];
      const int cap_rows = std::min(heads[kv], std::max(rec.n_tokens - W_, 0)) + std::min(W_, rec.n_tokens);
      h.budget = cap_rows;
      h.kept = cache.length(l, kv);
      h.bytes_after = static_cast<size_t>(h.kept) * rb;
      h.bytes_before = st.bytes_before[kv] ? st.bytes_before[kv] : static_cast<size_t>(rec.n_tokens) * rb;
      rec.budget = std::max(rec.budget, cap_rows);
      rec.kept += h.kept;
      rec.bytes_before += h.bytes_before;
      rec.bytes_after += h.bytes_after;
      expected += static_cast<size_t>(cap_rows) * rb;
    }
    if (!st.scores.head_preference.empty()) {
      // tappa-head: the layer's budget is the mean of its heads'.
      int sum = 0;
      for (const HeadRecord& h : rec.heads) sum += h.budget;
      rec.budget = (sum + n_lists_ / 2) / n_lists_;
    }
  }
  planned_decode_ = active();
  if (rowsum_) {
    record_.t_observe = rowsum_ns_.load() * 1e-9;
    hint_n_ = 0;  // the hinted call is over
    rowsum_ns_ = 0;
  }
  record_.bytes_expected = expected;
  record_.bytes_held_after = cache.bytes_held();
  record_.t_evict += seconds(t0, Clock::now());
}

// Replay scorers: the largest attention each prompt key gets from a replay call's queries (all of
// them are at positions >= N, the prompt being rows 0 … N-1 of every list), per query head. Rows come
// from the engine's threads, several at once: one lock per query head.
class KvCompressor::ReplayMax : public Observer {
 public:
  explicit ReplayMax(KvCompressor& c) : c_(c) {}
  bool wants_layer(int layer) override { return layer >= 0 && layer < c_.n_layer_ && !c_.skip_[layer]; }
  bool wants_attention_row(int layer, int head, int64_t pos) override { return pos >= c_.N_ && head < c_.n_head_; }
  void on_attention_row(int layer, int head, int64_t pos, const float* probs, int n) override {
    if (head < 0 || head >= c_.n_head_) return;
    const int end = std::min(c_.replay_end_, n);
    float* acc = c_.replay_acc_.data() + (static_cast<size_t>(layer) * c_.n_head_ + head) * c_.N_;
    std::lock_guard<std::mutex> lock(c_.replay_mu_[head]);
    for (int j = c_.replay_begin_; j < end; ++j) acc[j] = std::max(acc[j], probs[j]);
    c_.replay_rows_.fetch_add(1, std::memory_order_relaxed);
  }

 private:
  KvCompressor& c_;
};

void KvCompressor::replay(Engine& engine, Sequence& seq) {
  if (!awaiting_replay_) return;
  const auto t0 = Clock::now();
  if (seq.n_past() != N_ || static_cast<int64_t>(seq.tokens().size()) != N_)
    fail("KV method " + method_->name + ": the replay needs the sequence right after its " + std::to_string(N_) +
         "-token prompt, it holds " + std::to_string(seq.n_past()) + " positions");
  const Tokenizer* tok = model_.has_file() ? &model_.tokenizer() : nullptr;  // random-weight models have none
  const std::vector<ReplayCall> calls = method_->scorer->replay_calls(seq.tokens(), tok, opts_);
  replay_acc_.assign(static_cast<size_t>(n_layer_) * n_head_ * N_, 0.0f);
  if (!replay_mu_) replay_mu_ = std::make_unique<std::mutex[]>(n_head_);
  ReplayMax obs(*this);
  replay_rows_ = 0;
  int64_t rows_expected = 0;
  for (const ReplayCall& call : calls) {
    if (call.tokens.empty()) continue;
    if (call.key_begin < 0 || call.key_end > N_ || call.key_begin >= call.key_end)
      fail("internal: replay call scores keys [" + std::to_string(call.key_begin) + ", " +
           std::to_string(call.key_end) + ") of a " + std::to_string(N_) + "-token prompt");
    replay_begin_ = call.key_begin;
    replay_end_ = call.key_end;
    // A fork per call: the prompt's own sequence and cache stay untouched, and every call sees the
    // prompt alone before it. Its context is widened to fit the call (positions past the sequence's
    // n_ctx are only ever used by this throw-away copy).
    std::unique_ptr<Sequence> fork = seq.fork();
    fork->impl().n_ctx = std::max<int64_t>(fork->impl().n_ctx, N_ + static_cast<int64_t>(call.tokens.size()));
    fork->set_observer(&obs);
    engine.eval(*fork, call.tokens);
    rows_expected += static_cast<int64_t>(call.tokens.size()) * n_head_ * n_active_;
  }
  // A backend that hands observers no attention rows would leave every score 0: say so instead.
  if (replay_rows_.load() != rows_expected)
    fail("KV method " + method_->name + ": the " + engine.backend_name() + " backend handed over " +
         std::to_string(replay_rows_.load()) + " of the replay's " + std::to_string(rows_expected) +
         " attention rows (it needs them to score the keys)");
  // Token scores from the maxima; preferences (tappa, cake) were computed during the prefill.
  KvCache& cache = seq.cache();
  std::vector<float> sc;
  for (int l : seen_) {
    LayerState& st = layers_[l];
    const int P = st.scores.n_prefix;
    LayerInputs in;
    in.layer = l;
    in.n_head = n_head_;
    kptr_.assign(n_lists_, nullptr);
    in.keys = HeadsView::per_head(kptr_.data(), n_lists_, N_, head_dim_);  // shape only: not read
    in.replay_max = replay_acc_.data() + static_cast<size_t>(l) * n_head_ * N_;
    in.replay_stride = N_;
    sc.assign(static_cast<size_t>(n_lists_) * P, 0.0f);
    if (P > 0) method_->scorer->score(in, opts_, P, sc);
    for (int kv = 0; kv < n_lists_; ++kv)
      st.kept_scores[kv].assign(sc.begin() + static_cast<std::ptrdiff_t>(kv) * P,
                                sc.begin() + static_cast<std::ptrdiff_t>(kv + 1) * P);
    if (method_->allocator->reads_scores()) st.scores.scores = sc;
  }
  std::vector<float>().swap(replay_acc_);
  awaiting_replay_ = false;
  record_.skipped_reason.clear();
  record_.t_score += seconds(t0, Clock::now());
  finish_prefill(cache, true);
}

void KvCompressor::on_decode_layer(int layer, const std::vector<const float*>& probs, KvCache& cache) {
  if (layer < 0 || layer >= n_layer_ || skip_[layer] || !active()) return;
  if (awaiting_replay_)
    fail("KV method " + method_->name + " scores the prompt by a replay after it: call KvCompressor::replay(engine, "
         "sequence) before decoding (Generator and eval-kv do)");
  const auto t0 = Clock::now();
  bool first_active = true;
  for (int l = 0; l < layer; ++l)
    if (!skip_[l]) first_active = false;
  if (first_active) ++record_.decode_steps;
  const int G = n_head_ / n_lists_;
  const int W = opts_.window;
  LayerState& st = layers_[layer];
  for (int kv = 0; kv < n_lists_; ++kv) {
    const int n = cache.length(layer, kv);
    // Track the new row's position (the largest so far).
    if (kv < static_cast<int>(st.pos.size())) {
      std::vector<int>& pos = st.pos[kv];
      if (static_cast<int>(pos.size()) == n - 1) {
        pos.push_back(pos.empty() ? 0 : pos.back() + 1);  // rows stay in positional order
      } else if (static_cast<int>(pos.size()) != n) {
        pos.clear();
      }
    }
    const int b = decode_budget(layer, kv);
    if (static_cast<int64_t>(n) <= static_cast<int64_t>(b) + W + (options_.decode_evict_every - 1)) continue;
    probs_.resize(static_cast<size_t>(G) * n);
    for (int g = 0; g < G; ++g) std::memcpy(probs_.data() + static_cast<size_t>(g) * n, probs[kv * G + g], sizeof(float) * n);
    if (!decode_keep(probs_.data(), G, n, n, b, W, keep_, scratch_, opts_.pool)) continue;
    cache.keep_rows(layer, kv, keep_);
    record_.decode_evicted += n - static_cast<int64_t>(keep_.size());
    if (kv < static_cast<int>(st.pos.size()) && static_cast<int>(st.pos[kv].size()) == n) {
      std::vector<int>& pos = st.pos[kv];
      for (size_t j = 0; j < keep_.size(); ++j) pos[j] = pos[keep_[j]];
      pos.resize(keep_.size());
    }
  }
  record_.t_decode += seconds(t0, Clock::now());
}

}  // namespace tappa::kv

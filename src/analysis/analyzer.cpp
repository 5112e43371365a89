#include "analysis/analyzer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>

#include "analysis/capture.h"
#include "analysis/labels.h"
#include "analysis/patterns.h"
#include "analysis/qsim.h"
#include "analysis/rope_channels.h"
#include "analysis/stats.h"
#include "backend/cpu/ops.h"
#include "model/weights.h"
#include "report/html.h"
#include "report/png.h"
#include "tappa/engine.h"
#include "tappa/error.h"

namespace tappa::analysis {

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct HeadResult {
  int layer = 0, head = 0, kv_head = 0;
  int window = 0;  // sliding-window (local) layer: keys visible to a query; 0: global attention
  double qsim_post_last = 0, qsim_pre_last = 0, qsim_pre_sliding = 0, qsim_post_sliding = 0;
  double qsim_lag1 = 0, ksim_lag1 = 0;
  PatternMetrics metrics;
  Classification cls;
  RopeChannelReport rope;
  Prediction pred;
};

struct PassResult {
  std::vector<HeadResult> heads;  // layer-major
  std::unique_ptr<AttentionCapture> capture;
  double pass_s = 0, post_s = 0;
  int64_t n_tokens = 0;
  std::vector<int32_t> generated;
};

// The rotation layer `layer` applies (local layers of gemma3 have their own base and no scaling).
cpu::RopeParams rope_params(const Model& model, const std::vector<float>& override_freq, int layer) {
  const ModelConfig& c = model.config();
  const bool local = c.is_local(layer);
  return cpu::RopeParams{c.n_rot, c.head_dim, local ? c.rope_base_local : c.rope_base, local ? 1.0f : c.rope_freq_scale,
                         local ? nullptr : model.weights().rope_freqs, c.rope_layout == RopeLayout::Neox,
                         override_freq.empty() ? nullptr : override_freq.data()};
}

// Every head's numbers from one forward pass over `tokens` (+ generation).
PassResult run_pass(const Model& model, const std::vector<int32_t>& tokens, const AnalysisOptions& o,
                    const QsimOptions& qsim, const std::vector<float>& freq_override, const std::vector<float>& theta,
                    const std::string& label, const RunControl& control) {
  const ModelConfig& c = model.config();
  const int T_total = static_cast<int>(tokens.size()) + o.generate;
  PassResult res;
  res.heads.resize(static_cast<size_t>(c.n_layer) * c.n_head);

  EngineOptions eo;
  eo.n_threads = o.n_threads;
  eo.n_ctx = T_total;
  eo.n_batch = 512;
  Engine engine(model, eo);
  if (!freq_override.empty()) engine.set_rope_frequencies(freq_override);

  CaptureOptions co;
  co.n_tokens = T_total;
  co.rows = o.rows;
  co.grid = o.grid;
  co.zoom = o.rows;
  res.capture = std::make_unique<AttentionCapture>(c, co);
  AttentionCapture& cap = *res.capture;

  // Pattern measurements run as each layer's rows complete, so only one layer's rows are held.
  cap.set_layer_done([&](int l) {
    for (int h = 0; h < c.n_head; ++h) {
      const auto& rows = cap.rows(l, h);
      std::vector<AttentionRow> view;
      view.reserve(rows.size());
      for (size_t r = 0; r < rows.size(); ++r)
        view.push_back({cap.first_row_pos() + static_cast<int64_t>(r), std::span<const float>(rows[r])});
      HeadResult& hr = res.heads[static_cast<size_t>(l) * c.n_head + h];
      hr.metrics = measure_patterns(view);
      hr.cls = classify(hr.metrics);
    }
  });
  auto seq = engine.new_sequence();
  seq->set_observer(&cap);

  const auto t0 = Clock::now();
  if (o.on_pass) o.on_pass(label);
  control.progress(0, T_total);
  for (size_t b = 0; b < tokens.size(); b += 512) {
    const size_t n = std::min<size_t>(512, tokens.size() - b);
    auto logits = engine.eval(*seq, std::span(tokens.data() + b, n));
    control.progress(static_cast<int64_t>(b + n), T_total);
    // Cancelled (the CLI's SIGINT/SIGTERM): stop after this chunk; nothing is written.
    if (control.cancelled()) throw Error(ErrorCode::cancelled, "the analysis was cancelled during the forward pass");
    if (b + n == tokens.size()) {
      for (int g = 0; g < o.generate; ++g) {
        const int32_t next = argmax(logits);
        res.generated.push_back(next);
        const int32_t one[1] = {next};
        logits = engine.eval(*seq, one);
        control.progress(static_cast<int64_t>(tokens.size()) + g + 1, T_total);
      }
    }
  }
  res.pass_s = since(t0);
  res.n_tokens = T_total;

  const auto t1 = Clock::now();
  const int T = T_total, H = c.n_head, HK = c.n_head_kv, D = c.head_dim;
  const int W = std::clamp(o.last_window, 2, T);
  std::vector<float> post(static_cast<size_t>(T) * H * D), cs(c.n_rot);
  WindowSpec ws{std::min(o.sliding_window, T), std::max(1, o.sliding_stride), false};
  RopeChannelParams rcp;
  rcp.context_length = T;
  for (int l = 0; l < c.n_layer; ++l) {
    const cpu::RopeParams rp = rope_params(model, freq_override, l);
    // The channel frequencies this layer rotates with: the intervention's, or the layer's own.
    const std::vector<float>& layer_theta = freq_override.empty() ? model.rope_inv_freq(l) : theta;
    const float* qp = cap.q_pre(l).data();
    const float* kp = cap.k_pre(l).data();
    std::copy(qp, qp + post.size(), post.begin());
    for (int t = 0; t < T; ++t) {
      cpu::rope_angles(rp, t, cs.data());
      cpu::rope_apply(rp, cs.data(), post.data() + static_cast<size_t>(t) * H * D, H);
    }
    for (int h = 0; h < H; ++h) {
      HeadResult& hr = res.heads[static_cast<size_t>(l) * H + h];
      hr.layer = l;
      hr.head = h;
      hr.kv_head = kv_head_of(h, H, HK);
      hr.window = c.window(l);
      const HeadRows q_pre = head_rows(qp, T, H, D, h);
      const HeadRows q_post = head_rows(post.data(), T, H, D, h);
      const HeadRows k_pre = head_rows(kp, T, HK, D, hr.kv_head);
      hr.qsim_pre_last = qsim_head(q_pre.slice(T - W, W), qsim);
      hr.qsim_post_last = qsim_head(q_post.slice(T - W, W), qsim);
      hr.qsim_pre_sliding = mean_over_windows(qsim_windows_head(q_pre, ws, qsim));
      hr.qsim_post_sliding = mean_over_windows(qsim_windows_head(q_post, ws, qsim));
      QsimOptions cosine;
      hr.qsim_lag1 = qsim_lag_head(q_pre, 1, cosine);
      hr.ksim_lag1 = qsim_lag_head(k_pre, 1, cosine);
      hr.rope = analyze_rope_channels(q_pre, k_pre, c.n_rot, c.rope_layout, layer_theta, rcp);
      SeasonalEvidence se;
      if (hr.cls.period > 0 && hr.cls.period < T / 2) {
        se.lag = hr.cls.period;
        se.q_lag_sim = qsim_lag_head(q_pre, se.lag, cosine);
        se.k_lag_sim = qsim_lag_head(k_pre, se.lag, cosine);
      }
      hr.pred = predict_pattern(hr.qsim_pre_last, hr.ksim_lag1, hr.rope, {}, se);
    }
  }
  res.post_s = since(t1);
  return res;
}

// Measured and predicted labels agree when equal; a head measured as "mixed" agrees with any
// predictable prediction, since it shows more than one predictable pattern at once.
bool agrees(PatternLabel measured, PatternLabel predicted) {
  if (measured == predicted) return true;
  return measured == PatternLabel::mixed && predicted != PatternLabel::unpredictable;
}

nlohmann::json label_counts(const std::vector<HeadResult>& heads, int layer = -1) {
  nlohmann::json j = nlohmann::json::object();
  for (PatternLabel lb : {PatternLabel::reaccess, PatternLabel::sequential, PatternLabel::periodic_sequential,
                          PatternLabel::seasonal, PatternLabel::unpredictable, PatternLabel::mixed})
    j[std::string(label_name(lb))] = 0;
  for (const auto& h : heads)
    if (layer < 0 || h.layer == layer) j[std::string(label_name(h.cls.label))] = j[std::string(label_name(h.cls.label))].get<int>() + 1;
  return j;
}

std::string map_name(int l, int h, bool zoom) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "maps/L%02d_H%02d%s.png", l, h, zoom ? "_zoom" : "");
  return buf;
}

// The public result of one head (include/tappa/analysis.h).
HeadAnalysis public_head(const HeadResult& h) {
  HeadAnalysis a;
  a.layer = h.layer;
  a.head = h.head;
  a.kv_head = h.kv_head;
  a.window = h.window;
  a.qsim_post_last = h.qsim_post_last;
  a.qsim_pre_last = h.qsim_pre_last;
  a.qsim_pre_sliding = h.qsim_pre_sliding;
  a.qsim_post_sliding = h.qsim_post_sliding;
  a.qsim_lag1 = h.qsim_lag1;
  a.ksim_lag1 = h.ksim_lag1;
  a.topk_stability = h.metrics.topk_stability;
  a.topk_predictability = h.metrics.topk_predictability;
  a.sink_mass = h.metrics.sink_mass;
  a.sink4_mass = h.metrics.sink4_mass;
  a.reaccess_mass = h.metrics.reaccess_mass;
  a.diag_mass = h.metrics.local_mass;
  a.best_offset = h.metrics.best_offset;
  a.best_offset_mass = h.metrics.best_offset_mass;
  a.period = h.metrics.period;
  a.period_strength = h.metrics.period_strength;
  a.period_excess = h.metrics.period_excess;
  a.label = std::string(label_name(h.cls.label));
  a.evidence = h.cls.reason;
  for (const auto& ch : h.rope.channels) a.channel_energy.push_back(ch.energy);
  a.dominant_channel = h.rope.dominant;
  a.dominance = h.rope.dominance_ratio;
  a.wavelength = h.rope.dominant >= 0 ? h.rope.channels[h.rope.dominant].wavelength : 0.0;
  a.predicted_spacing = h.rope.predicted_spacing;
  a.frequency_class = std::string(frequency_class_name(h.rope.dominant_class));
  a.predicted_label = std::string(label_name(h.pred.label));
  a.prediction_reason = h.pred.reason;
  a.prediction_confident = h.pred.confident;
  a.prediction_agrees = agrees(h.cls.label, h.pred.label);
  return a;
}

// A head's report entry: the public result's fields (public_head) under the report's names.
nlohmann::json head_json(const HeadAnalysis& h) {
  return {{"layer", h.layer},
          {"head", h.head},
          {"kv_head", h.kv_head},
          {"qsim_post_last", h.qsim_post_last},
          {"qsim_pre_last", h.qsim_pre_last},
          {"qsim_pre_sliding", h.qsim_pre_sliding},
          {"qsim_post_sliding", h.qsim_post_sliding},
          {"qsim_lag1", h.qsim_lag1},
          {"ksim_lag1", h.ksim_lag1},
          {"metrics",
           {{"topk_stability", h.topk_stability},
            {"topk_predictability", h.topk_predictability},
            {"sink_mass", h.sink_mass},
            {"sink4_mass", h.sink4_mass},
            {"reaccess_mass", h.reaccess_mass},
            {"diag_mass", h.diag_mass},
            {"best_offset", h.best_offset},
            {"best_offset_mass", h.best_offset_mass},
            {"period", h.period},
            {"period_strength", h.period_strength},
            {"period_excess", h.period_excess}}},
          {"label", h.label},
          {"evidence", h.evidence},
          {"rope",
           {{"dominant_channel", h.dominant_channel},
            {"dominance", h.dominance},
            {"wavelength", h.wavelength},
            {"predicted_spacing", h.predicted_spacing},
            {"frequency_class", h.frequency_class},
            {"channel_energy", h.channel_energy}}},
          {"predicted_label", h.predicted_label},
          {"prediction_reason", h.prediction_reason},
          {"prediction_confident", h.prediction_confident},
          {"prediction_agrees", h.prediction_agrees},
          {"attention", h.window > 0 ? "local" : "global"},
          {"window", h.window},
          {"map", map_name(h.layer, h.head, false)},
          {"map_zoom", map_name(h.layer, h.head, true)}};
}

std::vector<nlohmann::json> layer_json(const ModelConfig& c, const std::vector<HeadResult>& heads) {
  std::vector<nlohmann::json> out;
  for (int l = 0; l < c.n_layer; ++l) {
    double a = 0, b = 0, d = 0, e = 0, f = 0, g = 0;
    for (int h = 0; h < c.n_head; ++h) {
      const HeadResult& r = heads[static_cast<size_t>(l) * c.n_head + h];
      a += r.qsim_post_last;
      b += r.qsim_pre_last;
      d += r.qsim_pre_sliding;
      e += r.qsim_post_sliding;
      f += r.qsim_lag1;
      g += r.ksim_lag1;
    }
    const double n = c.n_head;
    out.push_back({{"layer", l}, {"qsim_post_last", a / n}, {"qsim_pre_last", b / n}, {"qsim_pre_sliding", d / n},
                   {"qsim_post_sliding", e / n}, {"qsim_lag1", f / n}, {"ksim_lag1", g / n},
                   {"label_counts", label_counts(heads, l)}, {"attention", c.is_local(l) ? "local" : "global"},
                   {"window", c.window(l)}});
  }
  return out;
}


}  // namespace

}  // namespace tappa::analysis

namespace tappa {

using namespace analysis;

AnalysisResult analyze_text(const Model& model, const std::string& text, const AnalysisOptions& o, const RunControl& control) {
  const ModelConfig& c = model.config();
  QsimOptions qsim;
  qsim.mode = parse_mode(o.qsim_mode);
  qsim.pearson_official_scaling = o.pearson_official_scaling;
  if (o.max_tokens < 8) throw Error("--max-tokens must be at least 8");
  if (o.rows < 2) throw Error("--rows must be at least 2");
  if (o.generate < 0) throw Error("--generate must not be negative");
  if (o.rope_base && !(*o.rope_base > 1.0)) throw Error("--rope-base must be greater than 1");
  std::vector<int32_t> tokens = model.tokenizer().encode(text, true, false);
  if (tokens.size() < 8) throw Error("the input has only " + std::to_string(tokens.size()) + " tokens; analysis needs at least 8");
  if (static_cast<int>(tokens.size()) > o.max_tokens) tokens.resize(o.max_tokens);
  const int64_t T_total = static_cast<int64_t>(tokens.size()) + o.generate;
  if (T_total > c.n_ctx_train)
    throw Error(std::to_string(T_total) + " tokens exceed the model's context of " + std::to_string(c.n_ctx_train) +
                " (lower --max-tokens or --generate)");
  AnalysisOptions opt = o;
  opt.rows = static_cast<int>(std::min<int64_t>(o.rows, T_total - 1));

  // Frequencies: the model's own, or the intervention's.
  std::vector<float> theta = model.rope_inv_freq();
  std::vector<float> override_freq;
  std::string intervention_kind;
  if (o.rope_base) {
    intervention_kind = "rope_base";
    override_freq.resize(c.n_rot / 2);
    for (int m = 0; m < c.n_rot / 2; ++m) {
      double f = std::pow(*o.rope_base, -2.0 * m / c.n_rot) * c.rope_freq_scale;
      if (model.weights().rope_freqs) f /= model.weights().rope_freqs[m];
      override_freq[m] = static_cast<float>(f);
    }
  }
  if (o.channel_swap) {
    const auto [a, b] = *o.channel_swap;
    if (a < 0 || b < 0 || a >= c.n_rot / 2 || b >= c.n_rot / 2 || a == b)
      throw Error("--swap-channels: channels must be two different values in [0, " + std::to_string(c.n_rot / 2) + ")");
    intervention_kind = intervention_kind.empty() ? "channel_swap" : intervention_kind + "+channel_swap";
    if (override_freq.empty()) override_freq = theta;
    // Channel a's content now rotates with b's frequency and vice versa: the same as moving a's
    // two dimensions into slot b of every query and key (dot products do not see the move).
    std::swap(override_freq[a], override_freq[b]);
  }
  const std::vector<float>& used_theta = override_freq.empty() ? theta : override_freq;

  std::optional<PassResult> baseline;
  if (!intervention_kind.empty()) baseline = run_pass(model, tokens, opt, qsim, {}, theta, "analyze (baseline)", control);
  PassResult res = run_pass(model, tokens, opt, qsim, override_freq, used_theta,
                            intervention_kind.empty() ? "analyze" : "analyze (intervention)", control);

  std::optional<double> plain_prefill_s;
  if (o.time_plain_prefill) {
    EngineOptions eo;
    eo.n_threads = o.n_threads;
    eo.n_ctx = static_cast<int>(tokens.size());
    Engine plain(model, eo);
    auto seq = plain.new_sequence();
    const auto t0 = Clock::now();
    plain.eval(*seq, tokens);
    plain_prefill_s = since(t0);
  }

  nlohmann::json j;
  j["tappa_version"] = "0.1.0";
  j["model"] = {{"path", model.file().path()}, {"name", c.name}, {"arch", c.arch_name}, {"n_layer", c.n_layer},
                {"n_head", c.n_head}, {"n_head_kv", c.n_head_kv}, {"head_dim", c.head_dim},
                {"n_ctx_train", c.n_ctx_train}, {"rope_base", c.rope_base}, {"n_rot", c.n_rot},
                {"rope_layout", c.rope_layout == RopeLayout::Neox ? "neox" : "norm"},
                {"sliding_window", c.n_swa}, {"rope_base_local", c.n_swa > 0 ? nlohmann::json(c.rope_base_local) : nlohmann::json(nullptr)},
                {"n_local_layers", std::count(c.swa_layers.begin(), c.swa_layers.end(), uint8_t{1})}};
  j["input"] = {{"path", o.input_name}, {"n_tokens", T_total}, {"n_prompt_tokens", tokens.size()},
                {"n_generated", o.generate}, {"generated_text", model.tokenizer().decode(res.generated)}};
  j["settings"] = {{"qsim_mode", mode_name(qsim.mode)}, {"last_window", std::min<int64_t>(o.last_window, T_total)},
                   {"sliding_window", std::min<int64_t>(o.sliding_window, T_total)}, {"sliding_stride", o.sliding_stride},
                   {"rows", opt.rows}, {"topk", PatternParams{}.top_k}, {"grid", res.capture->grid_size()},
                   {"rope_base_override", o.rope_base ? nlohmann::json(*o.rope_base) : nlohmann::json(nullptr)},
                   {"channel_swap", o.channel_swap ? nlohmann::json({o.channel_swap->first, o.channel_swap->second})
                                                   : nlohmann::json(nullptr)}};
  j["timing"] = {{"prefill_s", res.pass_s}, {"analysis_s", res.post_s}, {"total_s", res.pass_s + res.post_s},
                 {"plain_prefill_s", plain_prefill_s ? nlohmann::json(*plain_prefill_s) : nlohmann::json(nullptr)}};
  j["map_style"] = {{"colormap", "magma"}, {"log_scale", true}, {"vmin", 1e-4}, {"vmax", 1.0}, {"log_floor", 1e-4}};
  j["layers"] = layer_json(c, res.heads);
  j["heads"] = nlohmann::json::array();
  std::vector<HeadAnalysis> heads;
  for (const HeadResult& h : res.heads) heads.push_back(public_head(h));
  for (const HeadAnalysis& h : heads) j["heads"].push_back(head_json(h));
  j["label_counts"] = label_counts(res.heads);

  // Agreement between measured and predicted labels.
  int n_agree = 0;
  std::map<std::string, std::pair<int, int>> by_label;
  for (const auto& h : res.heads) {
    const bool a = agrees(h.cls.label, h.pred.label);
    n_agree += a;
    auto& e = by_label[std::string(label_name(h.cls.label))];
    e.first++;
    e.second += a;
  }
  j["agreement"] = {{"n_heads", res.heads.size()}, {"n_agree", n_agree}, {"by_label", nlohmann::json::object()},
                    {"rule", "equal labels; a 'mixed' head agrees with any predictable prediction"}};
  for (const auto& [k, v] : by_label) j["agreement"]["by_label"][k] = {{"n", v.first}, {"agree", v.second}};

  // The paper's central claim: q-similarity tracks predictability. Headline: pre-RoPE q-similarity
  // of the measured window (the theorems are about pre-RoPE queries) against top-k stability; the
  // table adds every q-similarity variant against both stability (same keys) and predictability
  // (same keys or same offsets, so a clean diagonal counts as predictable).
  auto column = [&](auto get) {
    std::vector<double> v;
    for (const auto& h : res.heads) v.push_back(get(h));
    return v;
  };
  const std::vector<std::pair<std::string, std::vector<double>>> xs_all = {
      {"qsim_pre_last", column([](const HeadResult& h) { return h.qsim_pre_last; })},
      {"qsim_post_last", column([](const HeadResult& h) { return h.qsim_post_last; })},
      {"qsim_pre_sliding", column([](const HeadResult& h) { return h.qsim_pre_sliding; })},
      {"qsim_post_sliding", column([](const HeadResult& h) { return h.qsim_post_sliding; })},
      {"qsim_lag1", column([](const HeadResult& h) { return h.qsim_lag1; })}};
  const std::vector<std::pair<std::string, std::vector<double>>> ys_all = {
      {"topk_stability", column([](const HeadResult& h) { return h.metrics.topk_stability; })},
      {"topk_predictability", column([](const HeadResult& h) { return h.metrics.topk_predictability; })}};
  nlohmann::json table = nlohmann::json::array();
  for (const auto& [xn, xv] : xs_all)
    for (const auto& [yn, yv] : ys_all) {
      const CorrelationTest t = spearman_test(xv, yv);
      table.push_back({{"x", xn}, {"y", yn}, {"spearman", t.r}, {"p_value", t.p_value}, {"n", t.n}});
    }
  nlohmann::json points = nlohmann::json::array();
  for (const auto& h : res.heads) points.push_back({h.qsim_pre_last, h.metrics.topk_stability, label_name(h.cls.label)});
  const CorrelationTest sp = spearman_test(xs_all[0].second, ys_all[0].second);
  j["correlation"] = {{"x", "qsim_pre_last"}, {"y", "topk_stability"}, {"spearman", sp.r}, {"p_value", sp.p_value},
                      {"n", sp.n}, {"points", points}, {"table", table}};

  // Gallery: for every label present, its most typical head (highest q-sim; lowest for
  // unpredictable), then the heads with the most extreme q-similarity.
  std::vector<int> chosen;
  auto pick = [&](int idx, const std::string& why) {
    if (idx < 0 || std::find(chosen.begin(), chosen.end(), idx) != chosen.end() ||
        static_cast<int>(chosen.size()) >= o.gallery)
      return;
    chosen.push_back(idx);
    const HeadResult& h = res.heads[idx];
    j["gallery"].push_back({{"layer", h.layer}, {"head", h.head}, {"label", label_name(h.cls.label)},
                            {"qsim", h.qsim_post_last}, {"png", map_name(h.layer, h.head, false)},
                            {"zoom_png", map_name(h.layer, h.head, true)}, {"why", why}});
  };
  j["gallery"] = nlohmann::json::array();
  for (PatternLabel lb : {PatternLabel::reaccess, PatternLabel::sequential, PatternLabel::periodic_sequential,
                          PatternLabel::seasonal, PatternLabel::mixed, PatternLabel::unpredictable}) {
    int best = -1;
    for (size_t i = 0; i < res.heads.size(); ++i) {
      if (res.heads[i].cls.label != lb) continue;
      const bool better = best < 0 || (lb == PatternLabel::unpredictable
                                           ? res.heads[i].qsim_post_last < res.heads[best].qsim_post_last
                                           : res.heads[i].qsim_post_last > res.heads[best].qsim_post_last);
      if (better) best = static_cast<int>(i);
    }
    pick(best, std::string(lb == PatternLabel::unpredictable ? "lowest" : "highest") + " q-sim " +
                   std::string(label_name(lb)) + " head");
  }
  std::vector<int> order(res.heads.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return res.heads[a].qsim_post_last > res.heads[b].qsim_post_last; });
  for (size_t k = 0; k < order.size() && static_cast<int>(chosen.size()) < o.gallery; ++k) {
    pick(order[k], "high q-sim");
    pick(order[order.size() - 1 - k], "low q-sim");
  }

  // The heads whose maps the report draws; the others' map fields are null.
  auto maps = std::make_shared<ReportMaps>();
  for (size_t i = 0; i < res.heads.size(); ++i)
    if (o.all_maps || std::find(chosen.begin(), chosen.end(), static_cast<int>(i)) != chosen.end())
      maps->heads.push_back(static_cast<int>(i));
  if (!o.all_maps)
    for (size_t i = 0; i < res.heads.size(); ++i)
      if (std::find(chosen.begin(), chosen.end(), static_cast<int>(i)) == chosen.end()) {
        j["heads"][i]["map"] = nullptr;
        j["heads"][i]["map_zoom"] = nullptr;
      }
  maps->analysis_s = res.post_s;
  maps->pass_s = res.pass_s;

  // Intervention: what moved relative to the unmodified model.
  j["intervention"] = nullptr;
  if (baseline) {
    nlohmann::json base;
    base["layers"] = layer_json(c, baseline->heads);
    base["label_counts"] = label_counts(baseline->heads);
    base["heads"] = nlohmann::json::array();
    nlohmann::json changed = nlohmann::json::array();
    for (size_t i = 0; i < res.heads.size(); ++i) {
      const HeadResult& b = baseline->heads[i];
      const HeadResult& a = res.heads[i];
      base["heads"].push_back({{"layer", b.layer}, {"head", b.head}, {"label", label_name(b.cls.label)},
                               {"qsim_post_last", b.qsim_post_last}, {"dominant_channel", b.rope.dominant},
                               {"predicted_spacing", b.rope.predicted_spacing}, {"period", b.metrics.period}});
      if (a.cls.label != b.cls.label || std::fabs(a.rope.predicted_spacing - b.rope.predicted_spacing) > 1e-6)
        changed.push_back({{"layer", a.layer}, {"head", a.head}, {"label_before", label_name(b.cls.label)},
                           {"label_after", label_name(a.cls.label)}, {"spacing_before", b.rope.predicted_spacing},
                           {"spacing_after", a.rope.predicted_spacing}, {"period_before", b.metrics.period},
                           {"period_after", a.metrics.period}, {"qsim_before", b.qsim_post_last},
                           {"qsim_after", a.qsim_post_last}});
    }
    j["intervention"] = {{"kind", intervention_kind}, {"baseline", base}, {"changed", changed}};
  }


  AnalysisResult out;
  out.n_tokens = T_total;
  out.heads = std::move(heads);
  for (int l = 0; l < c.n_layer; ++l) {
    LayerAnalysis la;
    la.layer = l;
    la.window = c.window(l);
    const nlohmann::json& jl = j["layers"][l];
    la.qsim_post_last = jl["qsim_post_last"].get<double>();
    la.qsim_pre_last = jl["qsim_pre_last"].get<double>();
    la.qsim_pre_sliding = jl["qsim_pre_sliding"].get<double>();
    la.qsim_post_sliding = jl["qsim_post_sliding"].get<double>();
    la.qsim_lag1 = jl["qsim_lag1"].get<double>();
    la.ksim_lag1 = jl["ksim_lag1"].get<double>();
    out.layers.push_back(la);
  }
  maps->capture = std::move(res.capture);
  out.maps = std::move(maps);
  out.report = std::move(j);
  return out;
}

nlohmann::json write_analysis_report(const AnalysisResult& result, const std::string& out_dir) {
  if (!result.maps || !result.maps->capture) throw Error(ErrorCode::bad_input, "write_analysis_report: the result holds no analysis");
  std::filesystem::create_directories(std::filesystem::path(out_dir) / "maps");
  nlohmann::json j = result.report;
  // Pictures: the chosen heads' downsampled maps and zoomed crops.
  const auto t_pics = Clock::now();
  const AttentionCapture& cap = *result.maps->capture;
  report::HeatmapOptions hm;
  hm.cmap = report::Colormap::Magma;
  hm.log_scale = true;
  hm.log_floor = 1e-4f;
  hm.vmin = 1e-4f;
  hm.vmax = 1.0f;
  const int G = cap.grid_size(), Z = cap.zoom_size();
  hm.scale = std::max(1, 256 / G);
  report::HeatmapOptions hz = hm;
  hz.scale = std::max(1, 256 / std::max(1, Z));
  for (int i : result.maps->heads) {
    const HeadAnalysis& h = result.heads[i];
    report::write_heatmap_png((std::filesystem::path(out_dir) / map_name(h.layer, h.head, false)).string(),
                              cap.grid(h.layer, h.head), G, G, hm);
    report::write_heatmap_png((std::filesystem::path(out_dir) / map_name(h.layer, h.head, true)).string(),
                              cap.zoom_map(h.layer, h.head), Z, Z, hz);
  }
  const double pics_s = since(t_pics);
  j["timing"]["analysis_s"] = result.maps->analysis_s + pics_s;
  j["timing"]["total_s"] = result.maps->pass_s + result.maps->analysis_s + pics_s;
  report::write_report_json(j, out_dir);
  report::write_report(j, out_dir);
  return j;
}

}  // namespace tappa

namespace tappa::analysis {

nlohmann::json analyze(const Model& model, const std::string& text, const AnalysisOptions& options,
                       const std::string& out_dir) {
  return write_analysis_report(analyze_text(model, text, options), out_dir);
}

}  // namespace tappa::analysis

// RoPE channel energies, the dominant channel, channel swapping and the theorem-based prediction.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <random>
#include <vector>

#include "analysis/rope_channels.h"
#include "tappa/error.h"

namespace ta = tappa::analysis;
using ta::FrequencyClass;
using ta::PatternLabel;
using tappa::RopeLayout;

namespace {

constexpr int kD = 64;  // head dim = n_rot, 32 channels, θ_m = 10000^(−2m/64)

// [T][H*kD] random buffer; in head `hot`, the dims of channel `m_hot` are scaled by `scale`.
std::vector<float> make_buf(int T, int H, int hot, int m_hot, float scale, RopeLayout layout, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> v(static_cast<size_t>(T) * H * kD);
  for (float& x : v) x = nd(rng);
  const auto [a, b] = ta::channel_dims(m_hot, kD, layout);
  for (int t = 0; t < T; ++t) {
    float* row = v.data() + (static_cast<size_t>(t) * H + hot) * kD;
    row[a] *= scale;
    row[b] *= scale;
  }
  return v;
}

ta::RopeChannelReport report_with_dominant(FrequencyClass cls, double ratio) {
  ta::RopeChannelReport r;
  r.dominant = 3;
  r.channels.resize(8);
  r.channels[3].theta = cls == FrequencyClass::high ? 2 * std::numbers::pi / 12.0 : 1e-6;
  r.dominance_ratio = ratio;
  r.dominant_class = cls;
  r.predicted_spacing = ta::wavelength(r.channels[3].theta);
  return r;
}

}  // namespace

TEST(RopeChannels, ChannelDims) {
  EXPECT_EQ(ta::channel_dims(0, 64, RopeLayout::Norm), std::make_pair(0, 1));
  EXPECT_EQ(ta::channel_dims(5, 64, RopeLayout::Norm), std::make_pair(10, 11));
  EXPECT_EQ(ta::channel_dims(5, 64, RopeLayout::Neox), std::make_pair(5, 37));
  EXPECT_EQ(ta::channel_dims(31, 64, RopeLayout::Neox), std::make_pair(31, 63));
  EXPECT_EQ(ta::channel_dims(60, 128, RopeLayout::Neox), std::make_pair(60, 124));  // Qwen2.5's massive dim 124
  EXPECT_THROW(ta::channel_dims(32, 64, RopeLayout::Norm), tappa::Error);
  EXPECT_THROW(ta::channel_dims(-1, 64, RopeLayout::Norm), tappa::Error);
  EXPECT_THROW(ta::channel_dims(0, 7, RopeLayout::Norm), tappa::Error);
}

TEST(RopeChannels, ThetasWavelengthResonance) {
  const std::vector<float> th = ta::rope_thetas(kD, 10000.0);
  ASSERT_EQ(th.size(), 32u);
  EXPECT_FLOAT_EQ(th[0], 1.f);
  EXPECT_NEAR(th[5], std::pow(10000.0, -10.0 / 64), 1e-7);
  EXPECT_NEAR(ta::wavelength(th[5]), 2 * std::numbers::pi * std::pow(10000.0, 10.0 / 64), 1e-4);  // 26.50
  EXPECT_TRUE(std::isinf(ta::wavelength(0.0)));
  // PAPER.md §1.4 table: base 1e6, d = 128, m* = 5 -> 18.5 tokens.
  EXPECT_NEAR(ta::wavelength(ta::rope_thetas(128, 1e6)[5]), 18.5, 0.05);
  const double th12 = 2 * std::numbers::pi / 12;  // wavelength 12
  EXPECT_NEAR(ta::resonance_gap(12, th12), 0.0, 1e-12);
  EXPECT_NEAR(ta::resonance_gap(24, th12), 0.0, 1e-12);
  EXPECT_NEAR(ta::resonance_gap(6, th12), 1.0, 1e-12);  // half a turn
  EXPECT_NEAR(ta::resonance_gap(3, th12), 0.5, 1e-12);
}

TEST(RopeChannels, FindsDominantChannelBothLayouts) {
  const std::vector<float> th = ta::rope_thetas(kD, 10000.0);
  for (RopeLayout layout : {RopeLayout::Norm, RopeLayout::Neox}) {
    const int T = 48, H = 2, Hkv = 1;
    // Queries: head 1 has channel 5 ×10; keys (one KV head): channel 5 ×10.
    const std::vector<float> q = make_buf(T, H, 1, 5, 10.f, layout, 1);
    const std::vector<float> k = make_buf(T, Hkv, 0, 5, 10.f, layout, 2);
    const ta::HeadRows kr = ta::head_rows(k.data(), T, Hkv, kD, 0);
    const ta::RopeChannelReport r =
        ta::analyze_rope_channels(ta::head_rows(q.data(), T, H, kD, 1), kr, kD, layout, th);
    ASSERT_EQ(r.channels.size(), 32u);
    EXPECT_EQ(r.dominant, 5);
    EXPECT_NEAR(r.predicted_spacing, 2 * std::numbers::pi / th[5], 1e-9);
    EXPECT_NEAR(r.predicted_spacing, 26.50, 0.01);
    EXPECT_EQ(r.dominant_class, FrequencyClass::high);  // 26.5 <= 32
    EXPECT_GT(r.dominance_ratio, 0.6);                  // ~100 / (100 + 31)
    EXPECT_GT(r.dominance_over_rest, 10.0);
    EXPECT_EQ(r.context_length, T);
    EXPECT_EQ(r.channels[31].cls, FrequencyClass::low);  // wavelength ~47 000 >= 48
    EXPECT_EQ(r.channels[6].cls, FrequencyClass::mid);   // 2π·10000^(12/64) ≈ 35.3
    EXPECT_EQ(r.channels[8].cls, FrequencyClass::low);   // ≈ 62.8 >= 48 keys
    EXPECT_EQ(r.unrotated_energy, 0.0);
    double sum = 0;
    for (const auto& c : r.channels) sum += c.share;
    EXPECT_NEAR(sum, 1.0, 1e-12);
    // Head 0 of the same buffer has no hot channel: nothing dominates.
    const ta::RopeChannelReport r0 =
        ta::analyze_rope_channels(ta::head_rows(q.data(), T, H, kD, 0), kr, kD, layout, th);
    EXPECT_LT(r0.channels[5].share / r.channels[5].share, 0.5);
  }
}

TEST(RopeChannels, EnergiesByHand) {
  // D = 4, n_rot = 4, Norm: channel 0 = dims (0,1), channel 1 = dims (2,3).
  const std::vector<float> q = {3, 4, 0, 1,   // ‖c0‖ = 5, ‖c1‖ = 1
                                0, 1, 0, 3};  // ‖c0‖ = 1, ‖c1‖ = 3
  const std::vector<float> k = {1, 0, 0, 2};  // ‖c0‖ = 1, ‖c1‖ = 2
  const std::vector<float> th = {1.f, 0.01f};
  const auto r = ta::analyze_rope_channels(ta::HeadRows{q.data(), 2, 4, 4}, ta::HeadRows{k.data(), 1, 4, 4}, 4,
                                           RopeLayout::Norm, th, ta::RopeChannelParams{32, 100});
  EXPECT_DOUBLE_EQ(r.channels[0].e_q, 3.0);
  EXPECT_DOUBLE_EQ(r.channels[1].e_q, 2.0);
  EXPECT_DOUBLE_EQ(r.channels[0].energy, 3.0);
  EXPECT_DOUBLE_EQ(r.channels[1].energy, 4.0);
  EXPECT_EQ(r.dominant, 1);
  EXPECT_DOUBLE_EQ(r.dominance_ratio, 4.0 / 7.0);
  EXPECT_DOUBLE_EQ(r.dominance_over_rest, 4.0 / 3.0);
  EXPECT_EQ(r.channels[0].cls, FrequencyClass::high);  // 2π
  EXPECT_EQ(r.channels[1].cls, FrequencyClass::low);   // 628 >= 100
  // Neox pairs dims (0,2) and (1,3) instead.
  const auto n = ta::analyze_rope_channels(ta::HeadRows{q.data(), 2, 4, 4}, ta::HeadRows{k.data(), 1, 4, 4}, 4,
                                           RopeLayout::Neox, th);
  EXPECT_DOUBLE_EQ(n.channels[0].e_q, (3.0 + 0.0) / 2);
  EXPECT_DOUBLE_EQ(n.channels[1].e_q, (std::hypot(4.0, 1.0) + std::hypot(1.0, 3.0)) / 2);
  // Partial rotary: n_rot = 2 leaves dims 2, 3 unrotated.
  const auto p = ta::analyze_rope_channels(ta::HeadRows{q.data(), 2, 4, 4}, ta::HeadRows{k.data(), 1, 4, 4}, 2,
                                           RopeLayout::Norm, std::vector<float>{1.f});
  EXPECT_EQ(p.channels.size(), 1u);
  EXPECT_DOUBLE_EQ(p.unrotated_energy, 2.0 * 2.0);
  EXPECT_THROW(ta::analyze_rope_channels(ta::HeadRows{q.data(), 2, 4, 4}, ta::HeadRows{k.data(), 1, 4, 4}, 4,
                                         RopeLayout::Norm, std::vector<float>{1.f}),
               tappa::Error);  // 1 θ for 2 channels
}

TEST(RopeChannels, SwapMovesEnergy) {
  const std::vector<float> th = ta::rope_thetas(kD, 10000.0);
  for (RopeLayout layout : {RopeLayout::Norm, RopeLayout::Neox}) {
    const int T = 32;
    std::vector<float> q = make_buf(T, 1, 0, 30, 10.f, layout, 3);  // dominant low-frequency channel 30
    std::vector<float> k = make_buf(T, 1, 0, 30, 10.f, layout, 4);
    const ta::HeadRows qr{q.data(), T, kD, kD}, kr{k.data(), T, kD, kD};
    const auto before = ta::analyze_rope_channels(qr, kr, kD, layout, th);
    EXPECT_EQ(before.dominant, 30);
    EXPECT_EQ(before.dominant_class, FrequencyClass::low);
    const double e30 = before.channels[30].energy, e2 = before.channels[2].energy;
    // Relocate it to channel 2 (wavelength 2π·10000^(4/64) ≈ 11.2: high frequency).
    ta::swap_channels_all(q.data(), T, kD, layout, 30, 2);
    ta::swap_channels_all(k.data(), T, kD, layout, 30, 2);
    const auto after = ta::analyze_rope_channels(qr, kr, kD, layout, th);
    EXPECT_EQ(after.dominant, 2);
    EXPECT_DOUBLE_EQ(after.channels[2].energy, e30);
    EXPECT_DOUBLE_EQ(after.channels[30].energy, e2);
    EXPECT_EQ(after.dominant_class, FrequencyClass::high);
    EXPECT_NEAR(after.predicted_spacing, 11.17, 0.01);
    // The pair order is kept and the other dims are untouched.
    std::vector<float> v(kD);
    for (int i = 0; i < kD; ++i) v[i] = static_cast<float>(i);
    ta::swap_channels(v.data(), kD, layout, 1, 4);
    const auto [a1, b1] = ta::channel_dims(1, kD, layout);
    const auto [a4, b4] = ta::channel_dims(4, kD, layout);
    EXPECT_EQ(v[a1], a4);
    EXPECT_EQ(v[b1], b4);
    EXPECT_EQ(v[a4], a1);
    EXPECT_EQ(v[b4], b1);
    int moved = 0;
    for (int i = 0; i < kD; ++i) moved += v[i] != static_cast<float>(i);
    EXPECT_EQ(moved, 4);
  }
  std::vector<float> v(8, 0.f);
  EXPECT_THROW(ta::swap_channels(v.data(), 8, RopeLayout::Norm, 0, 4), tappa::Error);
  EXPECT_THROW(ta::swap_channels(v.data(), 8, RopeLayout::Norm, 0, 1, 10), tappa::Error);
  ta::swap_channels(v.data(), 8, RopeLayout::Neox, 0, 1, 4);  // partial rotary: channels 0, 1 of 2
}

TEST(RopeChannels, PredictRules) {
  const auto low = report_with_dominant(FrequencyClass::low, 0.6);
  const auto high = report_with_dominant(FrequencyClass::high, 0.6);
  const auto weak = report_with_dominant(FrequencyClass::high, 0.1);  // nothing dominates

  // Low q-similarity: unpredictable whatever else holds.
  EXPECT_EQ(ta::predict_pattern(0.3, 0.99, high).label, PatternLabel::unpredictable);
  EXPECT_EQ(ta::predict_pattern(0.64, 0.99, low).label, PatternLabel::unpredictable);
  // High q-sim + low-frequency dominant channel: re-access (also when keys are alike).
  EXPECT_EQ(ta::predict_pattern(0.97, 0.2, low).label, PatternLabel::reaccess);
  EXPECT_TRUE(ta::predict_pattern(0.97, 0.2, low).confident);
  EXPECT_EQ(ta::predict_pattern(0.97, 0.9, low).label, PatternLabel::reaccess);
  // High q-sim + high k-sim: sequential; with a dominant high-frequency channel, periodic with its spacing.
  EXPECT_EQ(ta::predict_pattern(0.97, 0.9, weak).label, PatternLabel::sequential);
  const ta::Prediction ps = ta::predict_pattern(0.97, 0.9, high);
  EXPECT_EQ(ps.label, PatternLabel::periodic_sequential);
  EXPECT_NEAR(ps.spacing, 12.0, 1e-9);
  EXPECT_NE(ps.reason.find("Thm 5.3"), std::string::npos) << ps.reason;
  // High q-sim, dissimilar keys, no low-frequency dominant channel: a guess.
  const ta::Prediction g = ta::predict_pattern(0.97, 0.2, high);
  EXPECT_EQ(g.label, PatternLabel::reaccess);
  EXPECT_FALSE(g.confident);
  // Seasonal: keys repeat at L = 24 (k lag-24 similarity above the consecutive one); 24·θ (θ = 2π/12)
  // is two full turns, so the high-frequency channel resonates.
  const ta::SeasonalEvidence se{24, 0.95, 0.9};
  const ta::Prediction s = ta::predict_pattern(0.97, 0.3, high, {}, se);
  EXPECT_EQ(s.label, PatternLabel::seasonal) << s.reason;
  EXPECT_EQ(s.spacing, 24);
  // L = 18 is half a turn off: no resonance, so the seasonal rule does not fire.
  EXPECT_NE(ta::predict_pattern(0.97, 0.3, high, {}, ta::SeasonalEvidence{18, 0.95, 0.9}).label,
            PatternLabel::seasonal);
  // Keys alike everywhere (k lag-L sim not above the consecutive one): not seasonal.
  EXPECT_EQ(ta::predict_pattern(0.97, 0.95, high, {}, ta::SeasonalEvidence{24, 0.95, 0.9}).label,
            PatternLabel::periodic_sequential);
  // Thresholds are parameters.
  ta::PredictionThresholds t;
  t.high_qsim = 0.2;
  EXPECT_EQ(ta::predict_pattern(0.3, 0.9, weak, t).label, PatternLabel::sequential);
}

TEST(RopeChannels, FrequencyClassNames) {
  EXPECT_EQ(ta::frequency_class_name(FrequencyClass::high), "high");
  EXPECT_EQ(ta::frequency_class_name(FrequencyClass::mid), "mid");
  EXPECT_EQ(ta::frequency_class_name(FrequencyClass::low), "low");
  for (PatternLabel l : ta::kAllPatternLabels) EXPECT_EQ(ta::parse_label(ta::label_name(l)), l);
  EXPECT_THROW(ta::parse_label("diagonal"), tappa::Error);
}

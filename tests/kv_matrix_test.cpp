// Every registered scorer with every registered allocator (issue #15: "any scorer with any allocator by
// one spec string") runs a compressed prefill and a few decode steps on a tiny random-weight model — the replay of kvzip, the score-reading split of adakv and the cascading of tappa
// included — and ends with every (layer, KV head) within its reported budget. A pairing that cannot
// work must say so in one line (tappa::Error), never crash or silently keep everything.
#include <gtest/gtest.h>

#include <string>

#include "kv/compressor.h"
#include "kv/spec.h"
#include "tappa/engine.h"
#include "tappa/error.h"
#include "tappa/eval.h"
#include "tappa/model.h"

namespace tappa {
namespace {

TEST(KvMatrix, EveryScorerWithEveryAllocatorCompressesATinyModel) {
  const auto model = Model::random("llama-tiny", 11, true);
  EngineOptions eo;
  eo.n_threads = 2;
  eo.n_ctx = 256;
  Engine engine(model, eo);
  std::vector<int32_t> prompt(64);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>((i * 53 + 7) % 1000 + 1);
  int ran = 0;
  for (const kv::Scorer* s : kv::all_scorers())
    for (const kv::Allocator* a : kv::all_allocators()) {
      if (s->none() || a->none()) continue;  // fullkv: nothing to compress
      const std::string spec = std::string(s->name()) + "+" + std::string(a->name()) + ":window=8";
      SCOPED_TRACE(spec);
      const int max_tokens = 3;
      try {
        // What Generator does (it needs a tokenizer, which a random-weight model has not): the
        // compressor as the sequence's policy, the prompt, the replay, then one-token steps.
        kv::KvCompressor comp(*model, kv::make_spec_options(spec, 24, std::nullopt));
        auto seq = engine.new_sequence();
        seq->set_policy(&comp);
        std::span<const float> logits = engine.eval(*seq, prompt);
        comp.replay(engine, *seq);
        for (int t = 0; t < max_tokens; ++t) {
          const int32_t one[1] = {argmax(logits)};
          logits = engine.eval(*seq, one);
        }
        const kv::CompressionRecord& rec = comp.record();
        EXPECT_TRUE(rec.compressed) << rec.skipped_reason;
        const KvCache& cache = seq->cache();
        int64_t total = 0;
        for (const KvLayerRecord& l : rec.layers)
          for (int h = 0; h < static_cast<int>(l.heads.size()); ++h) {
            EXPECT_LE(l.heads[h].kept, l.heads[h].budget) << "layer " << l.layer << " head " << h;
            total += l.heads[h].kept;
            // Decoding may have added rows (at most one per step beyond the budget, without decode eviction).
            EXPECT_LE(cache.length(l.layer, h), l.heads[h].budget + max_tokens);
          }
        // Every allocator keeps C tokens per layer and KV head on average; PyramidKV's floored step
        // may add a few (here 68 prefix rows instead of 64 per head): 10 % slack.
        const ModelConfig& mc = model->config();
        EXPECT_LE(total, static_cast<int64_t>(1.1 * mc.n_layer * mc.n_head_kv * 24));
        ++ran;
      } catch (const Error& e) {
        const std::string what = e.what();
        EXPECT_EQ(what.find('\n'), std::string::npos) << what;
        ADD_FAILURE() << "pairing refused: " << what;  // none is expected to be impossible today
      }
    }
  EXPECT_EQ(ran, (static_cast<int>(kv::all_scorers().size()) - 1) * (static_cast<int>(kv::all_allocators().size()) - 1));
  for (const char* s : {"kvzip", "triattention", "expected-attention", "snapkv"}) EXPECT_NO_THROW(kv::find_scorer(s)) << s;
  EXPECT_NO_THROW(kv::find_allocator("adakv"));
}

// eval-kv's "paper" group: the TAPPA harness's baseline settings, each a spec every entry point takes.
TEST(KvMatrix, PaperGroupIsTheHarnessBaselines) {
  const std::vector<std::string> paper = evalkv::expand_methods("paper");
  ASSERT_EQ(paper.size(), 6u);
  for (const std::string& m : paper) EXPECT_NO_THROW(evalkv::check_method_spec(m)) << m;
  const kv::CompressorOptions snap = kv::make_spec_options(paper[2], 128, std::nullopt);
  EXPECT_EQ(snap.opts.pool.kind, kv::Pooling::max);
  EXPECT_EQ(snap.opts.pool.kernel, 7);
  EXPECT_TRUE(kv::make_spec_options(paper[0], 128, std::nullopt).opts.streaming_keep_first);
  EXPECT_TRUE(kv::make_spec_options(paper[1], 128, std::nullopt).opts.h2o_official_mask);
  EXPECT_EQ(evalkv::expand_methods("snapkv+adakv"), std::vector<std::string>{"snapkv+adakv"});
  // The harness keeps one token set per query head (after repeat_kv): every paper entry says so.
  for (const std::string& m : paper)
    EXPECT_EQ(kv::make_spec_options(m, 128, std::nullopt).opts.granularity, kv::Granularity::query_head) << m;
  EXPECT_NO_THROW(kv::parse_spec("snapkv:granularity=query-head"));
  EXPECT_NO_THROW(kv::parse_spec("snapkv:granularity=kv-head"));
  EXPECT_THROW(kv::parse_spec("snapkv:granularity=per-token"), Error);
}

}  // namespace
}  // namespace tappa

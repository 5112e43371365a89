// tappa ppl — perplexity of a text, computed the way llama-perplexity computes it (see
// include/tappa/eval.h), optionally with layers skipped (in-memory pruning).
#include <cstdio>
#include <filesystem>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "cli/progress.h"
#include "cli/sharded.h"
#include "cli/stop_signal.h"
#include "cli/world.h"
#include "tappa/engine.h"
#include "tappa/error.h"
#include "tappa/eval.h"
#include "tappa/files.h"
#include "tappa/prune.h"

namespace tappa::cli {

void register_ppl(CLI::App& app, int& rc) {
  auto* cmd = app.add_subcommand("ppl", "Perplexity of a text (llama-perplexity's method: chunks of -c tokens, second half scored)");
  cmd->footer(
      "Each chunk of -c tokens starts from an empty cache with BOS in its first slot (when the model uses\n"
      "BOS); tokens c/2+1 .. c-1 are scored. PPL = exp(mean NLL), +/- as llama-perplexity prints it.\n\n"
      "Examples:\n"
      "  tappa ppl -f ../shared/data/wikitext2/wiki.test.reconstructed.raw -c 512 --chunks 20\n"
      "  tappa ppl -f wiki.test.raw -c 512 --chunks 20 --skip-layers 20-24 -o ppl.json\n"
      "  tappa ppl -f wiki.test.raw -o ppl.json --resume     # continue after an interruption\n"
      "Compare: $LLAMA_PERPLEXITY -m MODEL -f FILE -c 512 --chunks 20");
  struct Opts {
    std::string model, file, out, checkpoint, skip;
    int ctx = 512, chunks = -1, threads = 0;
    bool resume = false, quiet = false;
    CacheTypeFlags cache;
  };
  auto o = std::make_shared<Opts>();
  add_model_option(*cmd, o->model);
  cmd->add_option("-f,--file", o->file, "Text file to score")->required();
  cmd->add_option("-c,--ctx-size", o->ctx, "Chunk length in tokens (llama-perplexity's -c)")->capture_default_str()->check(CLI::Range(4, 1 << 20));
  cmd->add_option("--chunks", o->chunks, "Score at most this many chunks (-1: all)")->capture_default_str()->check(CLI::Range(-1, 1 << 30));
  cmd->add_option("-t,--threads", o->threads, "CPU threads (0: all)")->capture_default_str()->check(CLI::Range(0, 1024));
  cmd->add_option("--skip-layers", o->skip, "Skip these layers (in-memory pruning), e.g. 3,5,20-24");
  cmd->add_option("-o,--output", o->out, "Write the result as JSON (atomically)");
  add_cache_type_flags(*cmd, o->cache);
  cmd->add_option("--checkpoint", o->checkpoint, "Checkpoint file (default: OUTPUT.ckpt.json when -o is given)");
  cmd->add_flag("--resume", o->resume, "Continue from the checkpoint of an interrupted run with the same settings");
  cmd->add_flag("-q,--quiet", o->quiet, "No per-chunk values and no progress bar");
  cmd->callback([o, &rc] {
    World& world = World::get();  // first: under mpirun, errors from here on name the rank
    const auto model = Model::load(o->model);
    const std::vector<int> skip = prune::parse_layer_list(o->skip, model->config().n_layer);
    const Tokenizer& tok = model->tokenizer();
    const std::vector<int32_t> tokens = tok.encode(read_file(o->file), /*add_special=*/true);
    const int n_chunks = eval::count_chunks(static_cast<int64_t>(tokens.size()), o->ctx, o->chunks);
    const int32_t bos = tok.add_bos() ? tok.bos() : -1;
    const std::string ckpt = !o->checkpoint.empty() ? o->checkpoint : (o->out.empty() ? "" : o->out + ".ckpt.json");
    if (o->resume && ckpt.empty()) throw Error("--resume needs -o or --checkpoint (where the checkpoint lives)");

    nlohmann::json settings = {{"model", o->model}, {"file", o->file}, {"n_ctx", o->ctx},
                               {"n_tokens", tokens.size()}, {"skip_layers", skip}};
    const KvCacheType cache = cache_type_from_flags(o->cache);
    const KvCacheFormat format = resolve_kv_format(cache, model->config().head_dim);
    if (!format.is_f32()) settings["kv_format"] = kv_format_name(format);  // f32: checkpoints as before
    EngineOptions eo;
    eo.n_threads = o->threads;
    eo.n_ctx = o->ctx;
    eo.cache = cache;
    Engine engine(model, eo);
    engine.set_skip_layers(skip);
    auto seq = engine.new_sequence();
    if (!o->quiet && world.root())
      std::fprintf(stderr, "tappa ppl: %zu tokens, %d chunks of %d%s%s\n", tokens.size(), n_chunks, o->ctx,
                   skip.empty() ? "" : (", skipping layers " + prune::format_layer_list(skip)).c_str(),
                   world.size() > 1 ? (", " + std::to_string(world.size()) + " ranks").c_str() : "");
    StopSignalScope stop_scope;
    const auto legacy_chunks = [&](const nlohmann::json& c) {  // the one-process checkpoint's chunks
      std::vector<eval::ChunkNll> v;
      try {
        for (const auto& x : c.at("chunks")) v.push_back({x.at(0).get<double>(), x.at(1).get<double>(), x.at(2).get<int64_t>()});
      } catch (const nlohmann::json::exception& e) {
        throw Error(ckpt + ": not a valid checkpoint (" + e.what() + ")");
      }
      if (static_cast<int>(v.size()) > n_chunks) v.resize(n_chunks);
      return v;
    };
    std::vector<eval::ChunkNll> done;
    if (world.size() > 1) {
      // mpirun: chunk i on rank i mod N (cli/sharded.h); rank 0 gets every chunk's sums in chunk order.
      ShardedItems shards(world, n_chunks, ckpt, settings, "model, file, -c, --skip-layers or the cache types");
      if (o->resume) {
        if (std::filesystem::exists(ckpt)) {
          const std::vector<eval::ChunkNll> v = legacy_chunks(read_checkpoint(ckpt, settings, "model, file, -c, --skip-layers or the cache types"));
          for (size_t i = 0; i < v.size(); ++i) shards.add(static_cast<int64_t>(i), {v[i].nll_sum, v[i].nll2_sum, v[i].count});
        }
        shards.resume();
      }
      Progress progress("ppl", shards.n_mine(), "chunks of rank 0", !o->quiet && world.root());
      progress.update(shards.n_mine_done());
      for (int i = 0; i < n_chunks && !stop_requested(); ++i) {
        if (!shards.mine(i) || shards.done(i)) continue;
        eval::ChunkNll d;
        try {
          d = eval::score_chunk(engine, *seq, tokens, i, o->ctx, bos);
        } catch (const std::exception& e) {
          world.fail("chunk " + std::to_string(i) + ": " + e.what());
        }
        shards.record(i, {d.nll_sum, d.nll2_sum, d.count});
        progress.update(shards.n_mine_done());
      }
      progress.finish();
      const std::optional<std::vector<nlohmann::json>> gathered = shards.flush_and_gather(rc);
      if (!gathered) return;
      const std::vector<nlohmann::json>& all = *gathered;
      // The leading run of finished chunks, as one process would have them after a stop.
      for (const nlohmann::json& x : all) {
        if (x.is_null()) break;
        done.push_back({x.at(0).get<double>(), x.at(1).get<double>(), x.at(2).get<int64_t>()});
      }
    } else {
      if (o->resume && std::filesystem::exists(ckpt)) {
        done = legacy_chunks(read_checkpoint(ckpt, settings, "model, file, -c, --skip-layers or the cache types"));
        std::fprintf(stderr, "tappa ppl: resuming after %zu of %d chunks\n", done.size(), n_chunks);
      }
      const auto save_checkpoint = [&] {
        if (ckpt.empty()) return;
        nlohmann::json c = {{"settings", settings}, {"chunks", nlohmann::json::array()}};
        for (const auto& d : done) c["chunks"].push_back({d.nll_sum, d.nll2_sum, d.count});
        atomic_write(ckpt, c.dump());
      };
      Progress progress("ppl", n_chunks, "chunks", !o->quiet);
      progress.update(static_cast<int64_t>(done.size()));
      while (static_cast<int>(done.size()) < n_chunks && !stop_requested()) {
        done.push_back(eval::score_chunk(engine, *seq, tokens, static_cast<int>(done.size()), o->ctx, bos));
        save_checkpoint();
        progress.update(static_cast<int64_t>(done.size()));
      }
      progress.finish();
    }
    const eval::PplSummary s = eval::summarise(done);
    const bool complete = static_cast<int>(done.size()) == n_chunks;
    std::printf("Final estimate: PPL = %.4f +/- %.5f  (%d chunks of %d, %lld tokens scored%s)\n", s.ppl, s.ppl_stderr,
                s.n_chunks, o->ctx, static_cast<long long>(s.n_scored), complete ? "" : ", INCOMPLETE");
    if (!o->out.empty()) {
      nlohmann::json j = {{"ppl", s.ppl}, {"ppl_stderr", s.ppl_stderr}, {"mean_nll", s.mean_nll},
                          {"n_chunks", s.n_chunks}, {"n_chunks_planned", n_chunks}, {"n_scored", s.n_scored},
                          {"complete", complete}, {"settings", settings}};
      atomic_write(o->out, j.dump(2) + "\n");
    }
    if (!complete) {
      std::fprintf(stderr, "tappa ppl: stopped after %d of %d chunks (rerun with --resume to continue)\n", s.n_chunks, n_chunks);
      rc = 128 + stop_signal_number();
      return;
    }
    rc = 0;
  });
}

}  // namespace tappa::cli

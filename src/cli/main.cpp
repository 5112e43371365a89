// tappa — command-line entry point. Each subcommand lives in its own file; this one only wires them
// up and turns errors into one line and a non-zero exit.
#include <algorithm>
#include <cstdio>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include "cli/common.h"
#include "cli/world.h"
#include "tappa/error.h"

int main(int argc, char** argv) {
  CLI::App app{
      "tappa — run GGUF language models and explain their attention (TAPPA: temporal attention pattern "
      "predictability analysis).\n\nExamples:\n"
      "  tappa analyze                       # TAPPA report of the default model on the GPL-3 text\n"
      "  tappa info                          # what is inside the default model\n"
      "  tappa run -p \"The capital of France is\" -n 32\n"
      "  tappa run --chat -p \"Write a haiku about caches\"\n"
      "  tappa tokenize -p \"Hello world\"\n"
      "  tappa bench -t 2                    # pp512 / tg128 tokens per second",
      "tappa"};
  app.require_subcommand(1);
  app.fallthrough(false);
  int rc = 0;
  tappa::cli::register_info(app, rc);
  tappa::cli::register_run(app, rc);
  tappa::cli::register_tokenize(app, rc);
  tappa::cli::register_bench(app, rc);
  tappa::cli::register_analyze(app, rc);
  tappa::cli::register_compress(app, rc);
  tappa::cli::register_eval_kv(app, rc);
  tappa::cli::register_calibrate(app, rc);
  tappa::cli::register_prune_order(app, rc);
  tappa::cli::register_prune(app, rc);
  tappa::cli::register_eval_mc(app, rc);
  tappa::cli::register_ppl(app, rc);
  tappa::cli::register_serve(app, rc);
  try {
    std::vector<std::string> args;
    std::vector<char*> argp;
    tappa::cli::rewrite_llama_aliases(argc, argv, args, argp);
    app.parse(static_cast<int>(argp.size()), argp.data());
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help / --version are "errors" that succeed
    // A bad flag is bad input like any other: one "tappa: error:" line (CLI11's own text says which flag).
    std::string msg = e.what();
    std::replace(msg.begin(), msg.end(), '\n', ' ');
    const std::string cmd = app.get_subcommands().empty() ? "tappa" : "tappa " + app.get_subcommands().front()->get_name();
    std::fprintf(stderr, "tappa: error: %s (see %s --help)\n", msg.c_str(), cmd.c_str());
    return e.get_exit_code();
  } catch (const tappa::Error& e) {
    std::fflush(stdout);
    if (auto* w = tappa::cli::World::active_multi()) w->fail(e.what());
    std::fprintf(stderr, "tappa: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fflush(stdout);
    if (auto* w = tappa::cli::World::active_multi()) w->fail("out of memory");
    std::fprintf(stderr, "tappa: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    if (auto* w = tappa::cli::World::active_multi()) w->fail(e.what());
    std::fprintf(stderr, "tappa: error: %s\n", e.what());
    return 1;
  }
  return rc;
}

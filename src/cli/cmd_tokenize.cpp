// tappa tokenize — show how the model's tokenizer splits a text.
#include <cstdio>

#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "tappa/gguf.h"
#include "tappa/tokenizer.h"

namespace tappa::cli {

void register_tokenize(CLI::App& app, int& rc) {
  auto* cmd = app.add_subcommand("tokenize", "Split text into tokens with the model's tokenizer");
  cmd->footer("Examples:\n  tappa tokenize -p \"Hello world\"\n  tappa tokenize -f text.txt --ids");
  struct Opts {
    std::string model, prompt, file;
    bool ids = false, json = false, no_bos = false, parse_special = false;
  };
  auto o = std::make_shared<Opts>();
  add_model_option(*cmd, o->model);
  cmd->add_option("-p,--prompt", o->prompt, "Text to tokenize");
  cmd->add_option("-f,--file", o->file, "Read the text from a file");
  cmd->add_flag("--ids", o->ids, "Print only the token ids, space-separated");
  cmd->add_flag("--json", o->json, "Print JSON: ids and pieces");
  cmd->add_flag("--no-bos", o->no_bos, "Do not add BOS/EOS even if the model asks for them");
  cmd->add_flag("--parse-special", o->parse_special, "Turn special-token text such as <|im_start|> into those tokens");
  cmd->callback([o, &rc] {
    const std::string text = read_prompt(o->prompt, o->file);
    // Only the tokenizer is needed: no weights are touched (the file is mapped, not read).
    const GgufFile file = GgufFile::open(o->model);
    const Tokenizer tok = Tokenizer::from_gguf(file);
    const std::vector<int32_t> ids = tok.encode(text, !o->no_bos, o->parse_special);
    if (o->json) {
      nlohmann::json j;
      j["n_tokens"] = ids.size();
      j["ids"] = ids;
      for (int32_t id : ids) j["tokens"].push_back(tok.token_text(id));
      std::printf("%s\n", j.dump(1).c_str());
    } else if (o->ids) {
      for (size_t i = 0; i < ids.size(); ++i) std::printf(i ? " %d" : "%d", ids[i]);
      std::printf("\n");
    } else {
      for (int32_t id : ids) {
        const std::string piece = tok.token_to_piece(id, /*render_special=*/true);
        std::printf("%6d -> '%s'\n", id, piece.c_str());
      }
      std::printf("%zu tokens\n", ids.size());
    }
    rc = 0;
  });
}

}  // namespace tappa::cli

// tappa info — what a GGUF model contains: architecture, shapes, tensor types, tokenizer, template.
#include <cstdio>
#include <map>

#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "tappa/cpu.h"
#include "tappa/model.h"

namespace tappa::cli {

void register_info(CLI::App& app, int& rc) {
  auto* cmd = app.add_subcommand("info", "Show a model's architecture, shapes, tensor types, tokenizer and chat template");
  struct Opts {
    std::string model;
    bool tensors = false;
    bool metadata = false;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  add_model_option(*cmd, o->model);
  cmd->add_flag("--tensors", o->tensors, "List every tensor with its shape and type");
  cmd->add_flag("--metadata", o->metadata, "List every metadata key (long arrays abbreviated)");
  cmd->add_flag("--json", o->json, "Print JSON instead of text");
  cmd->callback([o, &rc] {
    const auto model = Model::load(o->model);
    const ModelConfig& c = model->config();
    const Tokenizer& tok = model->tokenizer();
    std::map<std::string, std::pair<int, uint64_t>> types;  // type -> (count, bytes)
    uint64_t total_bytes = 0, n_params = 0;
    for (const auto& t : model->file().tensors()) {
      auto& e = types[std::string(tensor_type_info(t.type).name)];
      e.first++;
      e.second += t.n_bytes;
      total_bytes += t.n_bytes;
      n_params += t.n_elements;
    }
    const double kv_bytes_per_token = 2.0 * c.n_layer * c.n_head_kv * c.head_dim * sizeof(float);
    nlohmann::json j;
    j["file"] = o->model;
    j["gguf_version"] = model->file().version();
    j["architecture"] = c.arch_name;
    j["name"] = c.name;
    j["n_params"] = n_params;
    j["size_bytes"] = total_bytes;
    j["n_layer"] = c.n_layer;
    j["n_embd"] = c.n_embd;
    j["n_head"] = c.n_head;
    j["n_head_kv"] = c.n_head_kv;
    j["cpu_variant"] = cpu_kernel_variant();
    j["cpu_variants_supported"] = cpu_kernel_variants_supported();
    j["head_dim"] = c.head_dim;
    j["n_ff"] = c.n_ff;
    j["n_vocab"] = c.n_vocab;
    j["n_ctx_train"] = c.n_ctx_train;
    j["rms_eps"] = c.rms_eps;
    j["rope"] = {{"base", c.rope_base}, {"n_rot", c.n_rot}, {"layout", c.rope_layout == RopeLayout::Neox ? "neox" : "norm"},
                 {"freq_scale", c.rope_freq_scale}, {"freq_factors", c.has_rope_freq_factors}};
    j["qkv_bias"] = c.has_qkv_bias;
    j["tied_output"] = c.tied_output;
    j["kv_bytes_per_token_fp32"] = kv_bytes_per_token;
    for (const auto& [name, e] : types) j["tensor_types"][name] = {{"count", e.first}, {"bytes", e.second}};
    j["tokenizer"] = {{"model", tok.model_type()}, {"pre", tok.pre_type()}, {"n_vocab", tok.n_vocab()},
                      {"bos", tok.bos()}, {"eos", tok.eos()}, {"add_bos", tok.add_bos()}};
    j["chat_template"] = tok.chat_template();
    if (o->tensors)
      for (const auto& t : model->file().tensors())
        j["tensors"].push_back({{"name", t.name}, {"shape", t.shape}, {"type", tensor_type_info(t.type).name},
                                {"bytes", t.n_bytes}, {"offset", t.offset}});
    if (o->metadata)
      for (const auto& [k, v] : model->file().metadata()) j["metadata"][k] = v.to_display_string();
    if (o->json) {
      std::printf("%s\n", j.dump(2).c_str());
      rc = 0;
      return;
    }
    std::printf("file           %s (GGUF v%u)\n", o->model.c_str(), model->file().version());
    std::printf("cpu kernels    %s (this CPU runs: %s; TAPPA_CPU_VARIANT pins one)\n", cpu_kernel_variant(),
                cpu_kernel_variants_supported().c_str());
    std::printf("architecture   %s%s%s\n", c.arch_name.c_str(), c.name.empty() ? "" : "  — ", c.name.c_str());
    std::printf("parameters     %.1f M in %.1f MiB\n", n_params / 1e6, total_bytes / 1048576.0);
    std::printf("layers         %d, d_model %d, ffn %d, vocab %d, trained context %d\n", c.n_layer, c.n_embd, c.n_ff,
                c.n_vocab, c.n_ctx_train);
    std::printf("attention      %d query heads, %d KV heads (group %d), head dim %d%s\n", c.n_head, c.n_head_kv,
                c.n_group(), c.head_dim, c.has_qkv_bias ? ", Q/K/V bias" : "");
    std::printf("rope           base %g, %d rotated dims, %s pairs%s%s\n", c.rope_base, c.n_rot,
                c.rope_layout == RopeLayout::Neox ? "neox (i, i+d/2)" : "adjacent (2i, 2i+1)",
                c.has_rope_freq_factors ? ", llama3 frequency factors" : "",
                c.rope_freq_scale != 1.0f ? ", linear scaling" : "");
    std::printf("norm           RMSNorm eps %g; output head %s\n", c.rms_eps, c.tied_output ? "tied to embeddings" : "separate");
    std::printf("kv cache       %.1f KiB per token (fp32 K+V, all layers)\n", kv_bytes_per_token / 1024.0);
    std::printf("tensor types  ");
    for (const auto& [name, e] : types) std::printf(" %s×%d (%.1f MiB)", name.c_str(), e.first, e.second / 1048576.0);
    std::printf("\n");
    std::printf("tokenizer      %s / pre %s, %d tokens, bos %d, eos %d, add_bos %s\n", tok.model_type().c_str(),
                tok.pre_type().c_str(), tok.n_vocab(), tok.bos(), tok.eos(), tok.add_bos() ? "yes" : "no");
    std::printf("chat template  %s\n", tok.chat_template().empty() ? "(none)" : "");
    if (!tok.chat_template().empty()) std::printf("%s\n", tok.chat_template().c_str());
    if (o->metadata) {
      std::printf("\nmetadata\n");
      for (const auto& [k, v] : model->file().metadata()) std::printf("  %-44s %s\n", k.c_str(), v.to_display_string().c_str());
    }
    if (o->tensors) {
      std::printf("\ntensors\n");
      for (const auto& t : model->file().tensors()) {
        std::string shape;
        for (size_t i = 0; i < t.shape.size(); ++i) shape += (i ? " x " : "") + std::to_string(t.shape[i]);
        std::printf("  %-32s %-8s %-16s %10llu bytes\n", t.name.c_str(), std::string(tensor_type_info(t.type).name).c_str(),
                    shape.c_str(), static_cast<unsigned long long>(t.n_bytes));
      }
    }
    rc = 0;
  });
}

}  // namespace tappa::cli

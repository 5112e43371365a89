// Hostile and broken model files at the Model::load level: the real default model truncated at every
// section boundary, tensors whose shapes or types do not fit the architecture, lying metadata, and a
// model larger than the machine's memory. Every case must throw tappa::Error with one line that names
// the file and the problem. (Byte-level damage to the GGUF container itself is in gguf_test.cpp.)
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "tappa/error.h"
#include "tappa/gguf.h"
#include "tappa/model.h"
#include "test_util.h"

namespace tappa {
namespace {

namespace fs = std::filesystem;

class HostileModel : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tappa_hostile_model_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

// What Model::load(path) throws: the tappa::Error message, or a description of what went wrong instead.
struct LoadOutcome {
  bool error = false;  // threw tappa::Error
  std::string message;
};

LoadOutcome try_load(const std::string& path) {
  try {
    Model::load(path);
    return {false, "loaded without error"};
  } catch (const Error& e) {
    return {true, e.what()};
  } catch (const std::exception& e) {
    return {false, std::string("not a tappa::Error: ") + e.what()};
  }
}

// Model::load(path) must throw tappa::Error: one line, starting with the path, containing `phrase`.
::testing::AssertionResult load_fails(const std::string& path, const std::string& phrase) {
  const LoadOutcome o = try_load(path);
  if (!o.error) return ::testing::AssertionFailure() << o.message;
  if (o.message.rfind(path + ": ", 0) != 0) return ::testing::AssertionFailure() << "does not start with the path: " << o.message;
  if (o.message.find('\n') != std::string::npos) return ::testing::AssertionFailure() << "more than one line: " << o.message;
  if (o.message.find(phrase) == std::string::npos)
    return ::testing::AssertionFailure() << "'" << phrase << "' not in: " << o.message;
  return ::testing::AssertionSuccess();
}

// ---------------------------------------------------------------------------------------------------
// The real model cut at every boundary between the sections of the file.

// Offsets where one part of a GGUF file ends and the next begins, found by walking the header with a
// reader written independently of src/io (so a shared mistake cannot hide).
struct Boundaries {
  std::set<uint64_t> cuts;
  uint64_t data_offset = 0;
};

Boundaries section_boundaries(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  uint64_t pos = 0;
  auto read = [&](void* dst, size_t n) {
    in.read(static_cast<char*>(dst), static_cast<std::streamsize>(n));
    pos += n;
  };
  auto u32 = [&] { uint32_t v = 0; read(&v, 4); return v; };
  auto u64 = [&] { uint64_t v = 0; read(&v, 8); return v; };
  auto skip = [&](uint64_t n) { in.seekg(static_cast<std::streamoff>(n), std::ios::cur); pos += n; };
  auto skip_string = [&] { skip(u64()); };
  std::function<void(uint32_t)> skip_value = [&](uint32_t type) {
    static const std::map<uint32_t, uint64_t> fixed = {{0, 1}, {1, 1}, {2, 2}, {3, 2}, {4, 4}, {5, 4}, {6, 4},
                                                       {7, 1}, {10, 8}, {11, 8}, {12, 8}};
    if (type == 8) return skip_string();
    if (type == 9) {
      const uint32_t elem = u32();
      const uint64_t n = u64();
      if (fixed.count(elem)) return skip(n * fixed.at(elem));
      for (uint64_t i = 0; i < n; ++i) skip_value(elem);
      return;
    }
    skip(fixed.at(type));
  };

  Boundaries b;
  b.cuts = {0, 1, 4, 8, 16};  // empty, inside the magic, after magic, version, tensor count
  u32();                       // magic
  u32();                       // version
  const uint64_t n_tensors = u64(), n_kv = u64();
  b.cuts.insert(pos);  // header complete
  uint64_t alignment = 32;
  for (uint64_t i = 0; i < n_kv; ++i) {
    const uint64_t key_len = u64();
    std::string key(key_len, '\0');
    read(key.data(), key_len);
    b.cuts.insert(pos);  // after the key
    const uint32_t type = u32();
    b.cuts.insert(pos);  // after the value type
    const uint64_t value_at = pos;
    if (key == "general.alignment") alignment = u32(); else skip_value(type);
    b.cuts.insert(pos);                       // after the value
    if (pos - value_at > 16) b.cuts.insert(value_at + (pos - value_at) / 2);  // inside a long value (the vocabulary)
  }
  struct Span { uint64_t offset, bytes; };
  std::vector<Span> spans;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    skip_string();
    b.cuts.insert(pos);  // after the name
    const uint32_t n_dims = u32();
    uint64_t n = 1;
    for (uint32_t d = 0; d < n_dims; ++d) n *= u64();
    const uint32_t type = u32();
    const uint64_t offset = u64();
    b.cuts.insert(pos);  // after the tensor info
    spans.push_back({offset, n * tensor_type_info(static_cast<TensorType>(type)).block_bytes /
                                 static_cast<uint64_t>(tensor_type_info(static_cast<TensorType>(type)).block_size)});
  }
  b.data_offset = (pos + alignment - 1) / alignment * alignment;
  if (b.data_offset > pos + 1) b.cuts.insert(pos + 1);  // inside the alignment padding
  for (const Span& s : spans) {
    b.cuts.insert(b.data_offset + s.offset);               // a tensor's first byte missing
    b.cuts.insert(b.data_offset + s.offset + s.bytes / 2);  // half of it
    b.cuts.insert(b.data_offset + s.offset + s.bytes - 1);  // all but its last byte
  }
  return b;
}

TEST_F(HostileModel, RealModelTruncatedAtEverySectionBoundary) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  const std::string copy = path("cut.gguf");
  fs::copy_file(test::default_model(), copy);
  const uint64_t size = fs::file_size(copy);
  ASSERT_NO_THROW(Model::load(copy));  // the walk below assumes a valid file

  const Boundaries b = section_boundaries(copy);
  ASSERT_GT(b.cuts.size(), 3 * 272u) << "expected every tensor of SmolLM2 (272) to give cuts";
  // Cut from the end backwards: each truncate(2) only shortens the copy, so no data is rewritten.
  int checked = 0;
  for (auto it = b.cuts.rbegin(); it != b.cuts.rend(); ++it) {
    const uint64_t cut = *it;
    if (cut >= size) continue;
    ASSERT_EQ(::truncate(copy.c_str(), static_cast<off_t>(cut)), 0);
    // One line naming the file; then either the read that ran off the end says so, or a count was found
    // impossible for the bytes that are left.
    const LoadOutcome o = try_load(copy);
    EXPECT_TRUE(o.error) << "cut at byte " << cut << ": " << o.message;
    EXPECT_EQ(o.message.rfind(copy + ": ", 0), 0u) << o.message;
    EXPECT_EQ(o.message.find('\n'), std::string::npos) << o.message;
    const bool explained = o.message.find(cut == 0 ? "empty file" : "truncated file") != std::string::npos ||
                           o.message.find("is impossible") != std::string::npos;
    EXPECT_TRUE(explained) << "cut at byte " << cut << " (data section at " << b.data_offset << "): " << o.message;
    ++checked;
  }
  EXPECT_GT(checked, 3 * 272);
}

// ---------------------------------------------------------------------------------------------------
// A tiny, valid llama model built here, then broken one way at a time.

struct TinyModel {
  std::vector<std::pair<std::string, GgufValue>> metadata;
  std::map<std::string, std::pair<std::vector<int64_t>, TensorType>> tensors;  // name -> shape, type
};

constexpr int kEmbd = 32, kHeads = 2, kHeadsKv = 1, kFf = 64, kVocab = 4;

TinyModel tiny_llama(const std::string& arch = "llama") {
  TinyModel m;
  auto str = [](const std::string& s) { return GgufValue::str(s); };
  m.metadata = {{"general.architecture", str(arch)},
                {arch + ".block_count", GgufValue::u32(1)},
                {arch + ".embedding_length", GgufValue::u32(kEmbd)},
                {arch + ".feed_forward_length", GgufValue::u32(kFf)},
                {arch + ".attention.head_count", GgufValue::u32(kHeads)},
                {arch + ".attention.head_count_kv", GgufValue::u32(kHeadsKv)},
                {arch + ".context_length", GgufValue::u32(64)},
                {"tokenizer.ggml.model", str("gpt2")},
                {"tokenizer.ggml.pre", str("default")},
                {"tokenizer.ggml.tokens", GgufValue::string_array({"a", "b", "c", "d"})},
                {"tokenizer.ggml.merges", GgufValue::array(GgufType::STRING, {})}};
  const int64_t hd = kEmbd / kHeads;
  auto f32 = TensorType::F32;
  m.tensors = {{"token_embd.weight", {{kEmbd, kVocab}, f32}},
               {"output_norm.weight", {{kEmbd}, f32}},
               {"blk.0.attn_norm.weight", {{kEmbd}, f32}},
               {"blk.0.attn_q.weight", {{kEmbd, kHeads * hd}, f32}},
               {"blk.0.attn_k.weight", {{kEmbd, kHeadsKv * hd}, f32}},
               {"blk.0.attn_v.weight", {{kEmbd, kHeadsKv * hd}, f32}},
               {"blk.0.attn_output.weight", {{kHeads * hd, kEmbd}, f32}},
               {"blk.0.ffn_norm.weight", {{kEmbd}, f32}},
               {"blk.0.ffn_gate.weight", {{kEmbd, kFf}, f32}},
               {"blk.0.ffn_up.weight", {{kEmbd, kFf}, f32}},
               {"blk.0.ffn_down.weight", {{kFf, kEmbd}, f32}}};
  return m;
}

void set_meta(TinyModel& m, const std::string& key, GgufValue v) {
  for (auto& [k, val] : m.metadata)
    if (k == key) { val = std::move(v); return; }
  m.metadata.emplace_back(key, std::move(v));
}

void write(const TinyModel& m, const std::string& path) {
  std::vector<std::vector<uint8_t>> storage;
  std::vector<GgufTensorToWrite> out;
  for (const auto& [name, st] : m.tensors) {
    const uint64_t n = tensor_n_bytes(st.second, st.first, name);
    storage.emplace_back(n, uint8_t{0});
    // Small finite values for the F32 weights (zero bytes are 0.0f, which is valid too).
    out.push_back({name, st.first, st.second, storage.back().data(), n});
  }
  write_gguf(path, m.metadata, out);
}

TEST_F(HostileModel, TinyModelLoads) {
  write(tiny_llama(), path("ok.gguf"));
  ASSERT_NO_THROW(Model::load(path("ok.gguf")));  // the control: every case below breaks exactly one thing
}

TEST_F(HostileModel, WrongTensorShapesForTheArchitecture) {
  const std::string p = path("shape.gguf");
  {
    TinyModel m = tiny_llama();
    m.tensors["blk.0.attn_q.weight"].first = {kEmbd / 2, kEmbd * 2};  // same element count, wrong shape
    write(m, p);
    EXPECT_TRUE(load_fails(p, "tensor 'blk.0.attn_q.weight' has shape [16, 64], expected [32, 32]"));
  }
  {
    TinyModel m = tiny_llama();
    m.tensors["blk.0.ffn_down.weight"].first = {kEmbd, kFf};  // transposed
    write(m, p);
    EXPECT_TRUE(load_fails(p, "tensor 'blk.0.ffn_down.weight' has shape [32, 64], expected [64, 32]"));
  }
  {
    TinyModel m = tiny_llama();
    m.tensors["blk.0.attn_norm.weight"].first = {kEmbd, 1};  // a vector stored as a matrix
    write(m, p);
    EXPECT_TRUE(load_fails(p, "tensor 'blk.0.attn_norm.weight' has shape [32, 1], expected [32]"));
  }
  {
    TinyModel m = tiny_llama();
    m.tensors["token_embd.weight"].first = {kEmbd, kVocab + 1};  // more rows than the tokenizer has tokens
    write(m, p);
    EXPECT_TRUE(load_fails(p, "token_embd.weight has 5 rows but the tokenizer has 4 tokens"));
  }
  {
    TinyModel m = tiny_llama();
    m.tensors["token_embd.weight"].first = {kEmbd + 32, kVocab};
    write(m, p);
    EXPECT_TRUE(load_fails(p, "tensor 'token_embd.weight' has shape [64, 4]"));
  }
  {
    TinyModel m = tiny_llama();
    m.tensors.erase("blk.0.ffn_up.weight");
    write(m, p);
    EXPECT_TRUE(load_fails(p, "missing tensor 'blk.0.ffn_up.weight'"));
  }
  {
    TinyModel m = tiny_llama("qwen2");  // qwen2 requires Q/K/V biases
    write(m, p);
    EXPECT_TRUE(load_fails(p, "missing tensor 'blk.0.attn_q.bias'"));
  }
  {
    TinyModel m = tiny_llama();
    m.tensors["blk.0.attn_k.weight"].second = TensorType::I32;  // a type no matmul kernel handles
    write(m, p);
    EXPECT_TRUE(load_fails(p, "tensor 'blk.0.attn_k.weight' has type I32, which tappa cannot compute with"));
  }
}

TEST_F(HostileModel, LyingMetadata) {
  const std::string p = path("meta.gguf");
  auto fails_with = [&](const std::string& key, GgufValue v, const std::string& phrase) {
    TinyModel m = tiny_llama();
    set_meta(m, key, std::move(v));
    write(m, p);
    return load_fails(p, phrase);
  };
  // A layer count far beyond the tensors present must fail before per-layer tables are sized by it.
  EXPECT_TRUE(fails_with("llama.block_count", GgufValue::u32(1u << 30), "block_count 1073741824 is larger than"));
  EXPECT_TRUE(fails_with("llama.block_count", GgufValue::u32(2), "missing tensor 'blk.1.attn_norm.weight'"));
  EXPECT_TRUE(fails_with("llama.block_count", GgufValue::i32(-1), "'llama.block_count' has implausible value -1"));
  EXPECT_TRUE(fails_with("llama.block_count", GgufValue::u64(uint64_t{1} << 40), "implausible value"));
  EXPECT_TRUE(fails_with("llama.block_count", GgufValue::str("one"), "llama.block_count"));
  EXPECT_TRUE(fails_with("llama.attention.head_count_kv", GgufValue::u32(3), "is not a multiple of head_count_kv 3"));
  // n_head * head_dim computed in int must not overflow.
  EXPECT_TRUE(fails_with("llama.attention.key_length", GgufValue::u32(1u << 30), "is implausibly large"));
  EXPECT_TRUE(fails_with("llama.attention.head_count_kv", GgufValue::u32(0), "head_count_kv"));
  EXPECT_TRUE(fails_with("llama.rope.freq_base", GgufValue::f32(-1.0f), "rope.freq_base must be positive"));
  EXPECT_TRUE(fails_with("llama.rope.freq_base", GgufValue::f64(std::nan("")), "is not finite"));
  EXPECT_TRUE(fails_with("general.architecture", GgufValue::str("mamba"), "unsupported architecture 'mamba'"));
  EXPECT_TRUE(fails_with("general.architecture", GgufValue::u32(1), "general.architecture"));
  EXPECT_TRUE(fails_with("tokenizer.ggml.tokens", GgufValue::array(GgufType::STRING, {}), "is empty"));
  EXPECT_TRUE(fails_with("tokenizer.ggml.model", GgufValue::str("spm-from-mars"), "unsupported tokenizer model"));
  // Found by gguf_fuzz: type errors raised inside the tokenizer and the Gemma 3 config readers lacked the path.
  EXPECT_TRUE(fails_with("tokenizer.ggml.model", GgufValue::u32(7), "tokenizer.ggml.model: expected a string"));
  EXPECT_TRUE(fails_with("tokenizer.ggml.bos_token_id", GgufValue::str("one"), "tokenizer.ggml.bos_token_id"));
}

// ---------------------------------------------------------------------------------------------------
// A model larger than memory.

// A GGUF file declaring one F32 tensor of `n_bytes`, written as a sparse file: the header is real, the
// data is a hole, so a 1 TiB model costs a few bytes of disk.
bool write_sparse_model(const std::string& path, uint64_t n_bytes) {
  std::vector<uint8_t> b;
  auto put = [&](const void* p, size_t n) { b.insert(b.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n); };
  auto u32 = [&](uint32_t v) { put(&v, 4); };
  auto u64 = [&](uint64_t v) { put(&v, 8); };
  auto str = [&](const std::string& s) { u64(s.size()); put(s.data(), s.size()); };
  put("GGUF", 4);
  u32(3);
  u64(1);  // tensors
  u64(1);  // metadata entries
  str("general.architecture");
  u32(8);
  str("llama");
  str("token_embd.weight");
  u32(2);
  u64(4096);                // row length
  u64(n_bytes / 4 / 4096);  // rows
  u32(0);                   // F32
  u64(0);                   // offset
  while (b.size() % 32) b.push_back(0);
  {
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  }
  return ::truncate(path.c_str(), static_cast<off_t>(b.size() + n_bytes)) == 0;
}

TEST_F(HostileModel, TooLargeForMemoryIsRefusedBeforeTouchingWeights) {
  const std::string p = path("huge.gguf");
  const uint64_t tib = uint64_t{1} << 40;
  if (!write_sparse_model(p, tib)) GTEST_SKIP() << "this filesystem cannot hold a 1 TiB sparse file";
  EXPECT_TRUE(load_fails(p, "the model's tensors take 1024.0 GiB but this machine has"));
  fs::remove(p);

  // The limit is the machine's memory: with a (test-only) lower limit a tiny model is refused too,
  // and with a higher one it loads.
  write(tiny_llama(), path("tiny.gguf"));
  ::setenv("TAPPA_MEMORY_BYTES", "1000", 1);
  EXPECT_TRUE(load_fails(path("tiny.gguf"), "this machine has 0.0 GiB of memory"));
  ::setenv("TAPPA_MEMORY_BYTES", "1000000", 1);
  EXPECT_NO_THROW(Model::load(path("tiny.gguf")));
  ::setenv("TAPPA_MEMORY_BYTES", "lots", 1);
  try {
    Model::load(path("tiny.gguf"));
    ADD_FAILURE() << "a malformed TAPPA_MEMORY_BYTES was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("TAPPA_MEMORY_BYTES must be a positive number of bytes"), std::string::npos);
  }
  ::unsetenv("TAPPA_MEMORY_BYTES");
}

}  // namespace
}  // namespace tappa

// Tests of the GGUF layer: write/read round trips, every hostile input we can think of, and the real
// default model when it is present.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "tappa/error.h"
#include "tappa/gguf.h"
#include "tappa/tensor_type.h"

namespace tappa {
namespace {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// Helpers

using Bytes = std::vector<uint8_t>;

// A fresh folder per test under the gtest temp dir, removed afterwards.
class GgufTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           (std::string("tappa_gguf_") + info->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

Bytes read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

void write_all(const std::string& path, const Bytes& b, size_t n = SIZE_MAX) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(std::min(n, b.size())));
  ASSERT_TRUE(out.good()) << path;
}

template <class T>
void patch(Bytes& b, size_t at, T v) {
  ASSERT_LE(at + sizeof(T), b.size());
  std::memcpy(b.data() + at, &v, sizeof(T));
}

// Opening `path` must throw tappa::Error with a one-line message that names the file and contains
// `phrase`.
::testing::AssertionResult open_fails(const std::string& path, const std::string& phrase) {
  try {
    GgufFile::open(path);
  } catch (const Error& e) {
    const std::string msg = e.what();
    if (msg.rfind(path + ": ", 0) != 0)
      return ::testing::AssertionFailure() << "message does not start with the path: " << msg;
    if (msg.find(phrase) == std::string::npos)
      return ::testing::AssertionFailure() << "message lacks '" << phrase << "': " << msg;
    if (msg.find('\n') != std::string::npos) return ::testing::AssertionFailure() << "multi-line message: " << msg;
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-tappa exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "opened without error";
}

// write_gguf(...) must throw tappa::Error naming the path and containing `phrase`, and leave neither
// the file nor its .tmp behind.
template <class F>
::testing::AssertionResult write_fails(const std::string& path, const std::string& phrase, F&& write) {
  try {
    write();
  } catch (const Error& e) {
    const std::string msg = e.what();
    if (msg.find(path) == std::string::npos) return ::testing::AssertionFailure() << "path missing: " << msg;
    if (msg.find(phrase) == std::string::npos)
      return ::testing::AssertionFailure() << "message lacks '" << phrase << "': " << msg;
    if (fs::exists(path) || fs::exists(path + ".tmp"))
      return ::testing::AssertionFailure() << "a file was left behind";
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "wrote without error";
}

Bytes pattern(size_t n, uint32_t seed) {
  Bytes b(n);
  std::mt19937 rng(seed);
  for (auto& x : b) x = static_cast<uint8_t>(rng());
  return b;
}

// Encodes GGUF fields by hand and returns where each one went, so tests can patch them.
struct RawWriter {
  Bytes b;
  template <class T>
  size_t put(T v) {
    const size_t at = b.size();
    b.resize(at + sizeof(T));
    std::memcpy(b.data() + at, &v, sizeof(T));
    return at;
  }
  size_t str(std::string_view s) {
    const size_t at = put<uint64_t>(s.size());
    b.insert(b.end(), s.begin(), s.end());
    return at;
  }
  void pad(size_t alignment) {
    while (b.size() % alignment) b.push_back(0);
  }
};

// A small valid file, built by hand with the offsets of every field the hostile tests patch. The
// SmallFileMatchesWriter test checks that write_gguf produces exactly these bytes from small_*().
struct SmallFile {
  Bytes bytes;
  size_t version, n_tensors, n_kv;
  size_t arch_key_len;          // length field of the first key
  size_t kb_key_last_char;      // last byte of key "k.b" (patch to 'a' for a duplicate)
  size_t kb_type, kb_value;     // bool entry
  size_t arr_count;             // count of the u16 array
  size_t align_type, align_value;
  size_t t0_ndims, t0_dims, t0_type, t0_offset;
  size_t t1_name_last_char, t1_ndims, t1_dims, t1_type, t1_offset;
  size_t data_offset, data_end;  // data_end: end of the last tensor's bytes (before final padding)
};

const Bytes kT0 = pattern(64, 1);  // F32 [8, 2]
const Bytes kT1 = pattern(34, 2);  // Q8_0 [32]

std::vector<std::pair<std::string, GgufValue>> small_metadata() {
  return {
      {"general.architecture", GgufValue::str("llama")},
      {"k.a", GgufValue::u32(7)},
      {"k.b", GgufValue::boolean(true)},
      {"k.arr", GgufValue::array(GgufType::UINT16, {GgufValue::u16(1), GgufValue::u16(2), GgufValue::u16(3)})},
      {"general.alignment", GgufValue::u32(32)},
  };
}

std::vector<GgufTensorToWrite> small_tensors() {
  return {
      {"t0", {8, 2}, TensorType::F32, kT0.data(), kT0.size()},
      {"t1", {32}, TensorType::Q8_0, kT1.data(), kT1.size()},
  };
}

SmallFile small_file() {
  SmallFile f{};
  RawWriter w;
  w.b = {'G', 'G', 'U', 'F'};
  f.version = w.put<uint32_t>(3);
  f.n_tensors = w.put<uint64_t>(2);
  f.n_kv = w.put<uint64_t>(5);
  f.arch_key_len = w.str("general.architecture");
  w.put<uint32_t>(8);
  w.str("llama");
  w.str("k.a");
  w.put<uint32_t>(4);
  w.put<uint32_t>(7);
  f.kb_key_last_char = w.str("k.b") + 8 + 2;
  f.kb_type = w.put<uint32_t>(7);
  f.kb_value = w.put<uint8_t>(1);
  w.str("k.arr");
  w.put<uint32_t>(9);
  w.put<uint32_t>(2);
  f.arr_count = w.put<uint64_t>(3);
  for (uint16_t v : {1, 2, 3}) w.put<uint16_t>(v);
  w.str("general.alignment");
  f.align_type = w.put<uint32_t>(4);
  f.align_value = w.put<uint32_t>(32);

  w.str("t0");
  f.t0_ndims = w.put<uint32_t>(2);
  f.t0_dims = w.put<int64_t>(8);
  w.put<int64_t>(2);
  f.t0_type = w.put<uint32_t>(0);
  f.t0_offset = w.put<uint64_t>(0);
  f.t1_name_last_char = w.str("t1") + 8 + 1;
  f.t1_ndims = w.put<uint32_t>(1);
  f.t1_dims = w.put<int64_t>(32);
  f.t1_type = w.put<uint32_t>(8);
  f.t1_offset = w.put<uint64_t>(64);
  w.pad(32);
  f.data_offset = w.b.size();
  w.b.insert(w.b.end(), kT0.begin(), kT0.end());
  w.b.insert(w.b.end(), kT1.begin(), kT1.end());
  f.data_end = w.b.size();
  w.pad(32);
  f.bytes = std::move(w.b);
  return f;
}

// ---------------------------------------------------------------------------------------------
// Tensor types

TEST(GgufTensorType, LayoutsMatchGgml) {
  struct Row { TensorType t; const char* name; int64_t block; size_t bytes; bool supported; };
  const Row rows[] = {
      {TensorType::F32, "F32", 1, 4, true},         {TensorType::F16, "F16", 1, 2, true},
      {TensorType::BF16, "BF16", 1, 2, true},       {TensorType::Q4_0, "Q4_0", 32, 18, true},
      {TensorType::Q4_1, "Q4_1", 32, 20, true},     {TensorType::Q5_0, "Q5_0", 32, 22, false},
      {TensorType::Q5_1, "Q5_1", 32, 24, false},    {TensorType::Q8_0, "Q8_0", 32, 34, true},
      {TensorType::Q8_1, "Q8_1", 32, 36, false},    {TensorType::Q2_K, "Q2_K", 256, 84, false},
      {TensorType::Q3_K, "Q3_K", 256, 110, false},  {TensorType::Q4_K, "Q4_K", 256, 144, true},
      {TensorType::Q5_K, "Q5_K", 256, 176, true},   {TensorType::Q6_K, "Q6_K", 256, 210, true},
      {TensorType::Q8_K, "Q8_K", 256, 292, true},   {TensorType::IQ2_XXS, "IQ2_XXS", 256, 66, false},
      {TensorType::IQ2_XS, "IQ2_XS", 256, 74, false}, {TensorType::IQ3_XXS, "IQ3_XXS", 256, 98, false},
      {TensorType::IQ1_S, "IQ1_S", 256, 50, false}, {TensorType::IQ4_NL, "IQ4_NL", 32, 18, false},
      {TensorType::IQ3_S, "IQ3_S", 256, 110, false}, {TensorType::IQ2_S, "IQ2_S", 256, 82, false},
      {TensorType::IQ4_XS, "IQ4_XS", 256, 136, false}, {TensorType::I8, "I8", 1, 1, false},
      {TensorType::I16, "I16", 1, 2, false},        {TensorType::I32, "I32", 1, 4, false},
      {TensorType::I64, "I64", 1, 8, false},        {TensorType::F64, "F64", 1, 8, false},
      {TensorType::IQ1_M, "IQ1_M", 256, 56, false}, {TensorType::TQ1_0, "TQ1_0", 256, 54, false},
      {TensorType::TQ2_0, "TQ2_0", 256, 66, false}, {TensorType::MXFP4, "MXFP4", 32, 17, false},
  };
  for (const Row& r : rows) {
    const TensorTypeInfo info = tensor_type_info(r.t);
    EXPECT_EQ(info.name, r.name);
    EXPECT_EQ(info.block_size, r.block) << r.name;
    EXPECT_EQ(info.block_bytes, r.bytes) << r.name;
    EXPECT_TRUE(info.known) << r.name;
    EXPECT_EQ(info.supported, r.supported) << r.name;
  }
  for (uint32_t raw : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, 9999u, 0xFFFFFFFFu}) {
    const TensorTypeInfo info = tensor_type_info(raw);
    EXPECT_FALSE(info.known) << raw;
    EXPECT_FALSE(info.supported) << raw;
    EXPECT_EQ(info.name, "unknown");
  }
}

TEST(GgufTensorType, TensorNBytes) {
  EXPECT_EQ(tensor_n_bytes(TensorType::F32, {8, 2}), 64u);
  EXPECT_EQ(tensor_n_bytes(TensorType::Q8_0, {64, 3}), 2u * 3u * 34u);
  EXPECT_EQ(tensor_n_bytes(TensorType::Q4_K, {512, 1, 1, 2}), 4u * 144u);
  EXPECT_THROW(tensor_n_bytes(TensorType::Q4_0, {33}), Error);
  EXPECT_THROW(tensor_n_bytes(TensorType::F32, {}), Error);
  EXPECT_THROW(tensor_n_bytes(TensorType::F32, {1, 1, 1, 1, 1}), Error);
  EXPECT_THROW(tensor_n_bytes(TensorType::F32, {4, 0}), Error);
  EXPECT_THROW(tensor_n_bytes(TensorType::F32, {int64_t{1} << 40, int64_t{1} << 40}), Error);
  EXPECT_THROW(tensor_n_bytes(static_cast<TensorType>(9999), {4}), Error);
}

// ---------------------------------------------------------------------------------------------
// Round trips

// Every metadata type, nested and empty arrays, empty and non-ASCII strings.
std::vector<std::pair<std::string, GgufValue>> rich_metadata() {
  using V = GgufValue;
  const V nested_u8 = V::array(GgufType::ARRAY, {V::array(GgufType::UINT8, {V::u8(1), V::u8(2)}),
                                                   V::array(GgufType::UINT8, {}),
                                                   V::array(GgufType::UINT8, {V::u8(255)})});
  const V nested_str = V::array(GgufType::ARRAY, {V::string_array({"a", "", "ü"}), V::string_array({})});
  const V three_deep = V::array(
      GgufType::ARRAY, {V::array(GgufType::ARRAY, {V::array(GgufType::INT64, {V::i64(-1), V::i64(INT64_MAX)})})});
  return {
      {"general.architecture", V::str("llama")},
      {"t.u8", V::u8(255)},
      {"t.i8", V::i8(-128)},
      {"t.u16", V::u16(65535)},
      {"t.i16", V::i16(-32768)},
      {"t.u32", V::u32(4294967295u)},
      {"t.i32", V::i32(std::numeric_limits<int32_t>::min())},
      {"t.u64", V::u64(std::numeric_limits<uint64_t>::max())},
      {"t.i64", V::i64(std::numeric_limits<int64_t>::min())},
      {"t.f32", V::f32(1e-5f)},
      {"t.f64", V::f64(-1.5e300)},
      {"t.true", V::boolean(true)},
      {"t.false", V::boolean(false)},
      {"t.empty_string", V::str("")},
      {"t.unicode", V::str("h\xC3\xA9llo, \xE4\xB8\x96\xE7\x95\x8C \xF0\x9F\xA6\x99")},
      {"t.embedded_nul", V::str(std::string("a\0b", 3))},
      {"t.arr_u32_empty", V::array(GgufType::UINT32, {})},
      {"t.arr_str_empty", V::array(GgufType::STRING, {})},
      {"t.arr_i16", V::array(GgufType::INT16, {V::i16(-1), V::i16(0), V::i16(32767)})},
      {"t.arr_f32", V::array(GgufType::FLOAT32, {V::f32(0.5f), V::f32(-2.0f)})},
      {"t.arr_f64", V::array(GgufType::FLOAT64, {V::f64(3.141592653589793)})},
      {"t.arr_bool", V::array(GgufType::BOOL, {V::boolean(true), V::boolean(false)})},
      {"t.arr_str", V::string_array({"<s>", "", "\xC4\xA0the", std::string(1000, 'x')})},
      {"t.arr_u64", V::array(GgufType::UINT64, {V::u64(0), V::u64(1ull << 63)})},
      {"t.arr_arr_u8", nested_u8},
      {"t.arr_arr_str", nested_str},
      {"t.arr_arr_empty", V::array(GgufType::ARRAY, {})},
      {"t.three_deep", three_deep},
  };
}

// Compares two values exactly (type, element types, alternative and content).
void expect_same_value(const GgufValue& want, const GgufValue& got, const std::string& where) {
  ASSERT_EQ(want.type, got.type) << where;
  ASSERT_EQ(want.data.index(), got.data.index()) << where;
  if (const auto* a = std::get_if<GgufArray>(&want.data)) {
    const auto& b = std::get<GgufArray>(got.data);
    ASSERT_EQ(a->element_type, b.element_type) << where;
    ASSERT_EQ(a->values.size(), b.values.size()) << where;
    for (size_t i = 0; i < a->values.size(); ++i)
      expect_same_value(a->values[i], b.values[i], where + "[" + std::to_string(i) + "]");
  } else if (want.type == GgufType::FLOAT32) {
    // Stored as float on disk; the double read back is the float's exact value.
    EXPECT_EQ(static_cast<float>(std::get<double>(want.data)), std::get<double>(got.data)) << where;
  } else {
    std::visit(
        [&](const auto& w) {
          using T = std::decay_t<decltype(w)>;
          if constexpr (!std::is_same_v<T, GgufArray>) {
            EXPECT_EQ(w, std::get<T>(got.data)) << where;
          }
        },
        want.data);
  }
}

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  TensorType type;
};

const std::vector<TensorSpec> kRichTensors = {
    {"f32", {4, 3}, TensorType::F32},           {"f16.odd", {5}, TensorType::F16},
    {"q8_0", {64, 2}, TensorType::Q8_0},        {"q4_0.4d", {32, 1, 1, 2}, TensorType::Q4_0},
    {"q4_k", {256, 2}, TensorType::Q4_K},       {"bf16", {3, 1, 1}, TensorType::BF16},
    {"i8", {7}, TensorType::I8},                {"q6_k", {256}, TensorType::Q6_K},
    {"blk.0.attn_q.weight", {64, 64}, TensorType::Q4_1},
};

TEST_F(GgufTest, RoundTripEveryValueTypeAndTensorType) {
  const auto metadata = rich_metadata();
  std::vector<Bytes> data;
  std::vector<GgufTensorToWrite> tensors;
  for (size_t i = 0; i < kRichTensors.size(); ++i) {
    const TensorSpec& s = kRichTensors[i];
    data.push_back(pattern(tensor_n_bytes(s.type, s.shape), static_cast<uint32_t>(100 + i)));
  }
  for (size_t i = 0; i < kRichTensors.size(); ++i)
    tensors.push_back({kRichTensors[i].name, kRichTensors[i].shape, kRichTensors[i].type, data[i].data(), data[i].size()});

  for (uint64_t alignment : {32u, 64u}) {
    SCOPED_TRACE("alignment " + std::to_string(alignment));
    const std::string path = file("rich_" + std::to_string(alignment) + ".gguf");
    write_gguf(path, metadata, tensors, alignment);
    EXPECT_FALSE(fs::exists(path + ".tmp"));

    const GgufFile f = GgufFile::open(path);
    EXPECT_EQ(f.path(), path);
    EXPECT_EQ(f.version(), 3u);
    EXPECT_EQ(f.alignment(), alignment);
    EXPECT_EQ(f.file_size(), fs::file_size(path));
    EXPECT_EQ(f.data_offset() % alignment, 0u);
    EXPECT_EQ(f.file_size() % alignment, 0u);  // the last tensor is padded too

    // Metadata in order; general.alignment appended only when it is not the default.
    const size_t extra = alignment == 32 ? 0 : 1;
    ASSERT_EQ(f.metadata().size(), metadata.size() + extra);
    for (size_t i = 0; i < metadata.size(); ++i) {
      EXPECT_EQ(f.metadata()[i].first, metadata[i].first);
      expect_same_value(metadata[i].second, f.metadata()[i].second, metadata[i].first);
      EXPECT_EQ(f.find(metadata[i].first), &f.metadata()[i].second);
    }
    if (extra) {
      EXPECT_EQ(f.metadata().back().first, "general.alignment");
      EXPECT_EQ(f.metadata().back().second.type, GgufType::UINT32);
      EXPECT_EQ(f.get_u64("general.alignment"), alignment);
    } else {
      EXPECT_EQ(f.find("general.alignment"), nullptr);
    }

    // Tensors: order, layout, and bytes that are the mapping, not a copy.
    ASSERT_EQ(f.tensors().size(), tensors.size());
    uint64_t expected_offset = 0;
    for (size_t i = 0; i < tensors.size(); ++i) {
      const GgufTensorInfo& t = f.tensors()[i];
      SCOPED_TRACE(t.name);
      EXPECT_EQ(t.name, tensors[i].name);
      EXPECT_EQ(t.shape, tensors[i].shape);
      EXPECT_EQ(t.type, tensors[i].type);
      EXPECT_EQ(t.n_bytes, data[i].size());
      int64_t n = 1;
      for (int64_t d : t.shape) n *= d;
      EXPECT_EQ(t.n_elements, static_cast<uint64_t>(n));
      EXPECT_EQ(t.row_length(), t.shape[0]);
      EXPECT_EQ(t.rows(), n / t.shape[0]);
      EXPECT_EQ(t.offset, expected_offset);  // packed back to back at the alignment
      expected_offset = (t.offset + t.n_bytes + alignment - 1) / alignment * alignment;
      EXPECT_EQ(t.offset % alignment, 0u);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % alignment, 0u);  // the mapping is page-aligned
      EXPECT_EQ(t.data - f.tensors()[0].data, static_cast<ptrdiff_t>(t.offset));
      ASSERT_NE(t.data, nullptr);
      EXPECT_EQ(std::memcmp(t.data, data[i].data(), data[i].size()), 0);
      EXPECT_EQ(f.find_tensor(t.name), &t);
      EXPECT_EQ(&f.tensor(t.name), &t);
    }
    EXPECT_EQ(f.data_offset() + expected_offset, f.file_size());
  }
}

TEST_F(GgufTest, SmallFileMatchesWriter) {
  const std::string path = file("small.gguf");
  write_gguf(path, small_metadata(), small_tensors());
  const SmallFile s = small_file();
  EXPECT_EQ(read_all(path), s.bytes);
  const GgufFile f = GgufFile::open(path);
  EXPECT_EQ(f.data_offset(), s.data_offset);
  EXPECT_EQ(f.tensors()[1].offset, 64u);
}

TEST_F(GgufTest, VersionTwoIsAccepted) {
  SmallFile s = small_file();
  patch<uint32_t>(s.bytes, s.version, 2);
  const std::string path = file("v2.gguf");
  write_all(path, s.bytes);
  EXPECT_EQ(GgufFile::open(path).version(), 2u);
}

TEST_F(GgufTest, HeaderOnlyFileIsValid) {
  const std::string path = file("empty_model.gguf");
  write_gguf(path, {}, {});
  EXPECT_EQ(fs::file_size(path), 32u);  // 24-byte header padded to the alignment
  const GgufFile f = GgufFile::open(path);
  EXPECT_TRUE(f.metadata().empty());
  EXPECT_TRUE(f.tensors().empty());
  EXPECT_EQ(f.data_offset(), 32u);

  // Without tensors the padding may be missing altogether.
  write_all(path, read_all(path), 24);
  EXPECT_EQ(GgufFile::open(path).data_offset(), 24u);
}

TEST_F(GgufTest, ArraysNestedSixteenDeepRoundTrip) {
  GgufValue v = GgufValue::array(GgufType::UINT8, {GgufValue::u8(42)});
  for (int i = 1; i < 16; ++i) v = GgufValue::array(GgufType::ARRAY, {v});
  const std::string path = file("deep.gguf");
  write_gguf(path, {{"deep", v}}, {});
  const GgufFile f = GgufFile::open(path);
  const GgufValue* x = &f.get("deep");
  for (int i = 0; i < 15; ++i) x = &x->as_array().values.at(0);
  EXPECT_EQ(x->as_array().values.at(0).as_u64(), 42u);

  // One more level is refused by the writer.
  const GgufValue too_deep = GgufValue::array(GgufType::ARRAY, {v});
  EXPECT_TRUE(write_fails(file("deeper.gguf"), "nested", [&] { write_gguf(file("deeper.gguf"), {{"deep", too_deep}}, {}); }));
}

TEST_F(GgufTest, MoveKeepsTensorPointers) {
  const std::string path = file("small.gguf");
  write_all(path, small_file().bytes);
  GgufFile a = GgufFile::open(path);
  const uint8_t* p = a.tensor("t1").data;
  GgufFile b = std::move(a);
  EXPECT_EQ(b.tensor("t1").data, p);
  EXPECT_EQ(std::memcmp(p, kT1.data(), kT1.size()), 0);
  GgufFile c = GgufFile::open(path);
  c = std::move(b);
  EXPECT_EQ(c.tensor("t1").data, p);
}

TEST_F(GgufTest, WriterReplacesExistingFileAtomically) {
  const std::string path = file("model.gguf");
  write_all(path, Bytes{'o', 'l', 'd'});
  write_gguf(path, small_metadata(), small_tensors());
  EXPECT_EQ(read_all(path), small_file().bytes);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

// ---------------------------------------------------------------------------------------------
// Accessors

TEST_F(GgufTest, TypedAccessors) {
  const std::string path = file("rich.gguf");
  write_gguf(path, rich_metadata(), {});
  const GgufFile f = GgufFile::open(path);

  EXPECT_EQ(f.get("t.u8").as_u64(), 255u);
  EXPECT_EQ(f.get("t.u8").as_i64(), 255);
  EXPECT_EQ(f.get("t.i8").as_i64(), -128);
  EXPECT_EQ(f.get("t.u64").as_u64(), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(f.get("t.i64").as_i64(), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(f.get("t.u32").as_f64(), 4294967295.0);
  EXPECT_EQ(f.get("t.f32").as_f64(), static_cast<double>(1e-5f));
  EXPECT_EQ(f.get("t.f64").as_f64(), -1.5e300);
  EXPECT_TRUE(f.get("t.true").as_bool());
  EXPECT_FALSE(f.get("t.false").as_bool());
  EXPECT_EQ(f.get("t.empty_string").as_string(), "");
  EXPECT_EQ(f.get("t.embedded_nul").as_string(), std::string("a\0b", 3));
  EXPECT_EQ(f.get("t.arr_str").as_array().values.at(3).as_string(), std::string(1000, 'x'));
  EXPECT_EQ(f.get_u64("t.u16"), 65535u);
  EXPECT_EQ(f.get_f64("t.f64"), -1.5e300);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_u64("absent"), std::nullopt);
  EXPECT_EQ(f.get_f64("absent"), std::nullopt);
  EXPECT_EQ(f.get_string("absent"), std::nullopt);
  EXPECT_EQ(f.find("absent"), nullptr);
  EXPECT_EQ(f.find_tensor("absent"), nullptr);

  auto throws_with = [](auto&& fn, const std::string& phrase) {
    try {
      fn();
    } catch (const Error& e) {
      return std::string(e.what()).find(phrase) != std::string::npos ? ::testing::AssertionSuccess()
                                                                       : ::testing::AssertionFailure() << e.what();
    }
    return ::testing::AssertionFailure() << "no error";
  };
  EXPECT_TRUE(throws_with([&] { f.get("t.i8").as_u64("t.i8"); }, "t.i8: value -128 is negative"));
  EXPECT_TRUE(throws_with([&] { f.get("t.u64").as_i64("t.u64"); }, "does not fit in int64"));
  EXPECT_TRUE(throws_with([&] { f.get("t.u8").as_string("t.u8"); }, "t.u8: expected a string, found uint8"));
  EXPECT_TRUE(throws_with([&] { f.get("t.arr_str").as_u64("toks"); }, "found array of string"));
  EXPECT_TRUE(throws_with([&] { f.get("t.true").as_f64(); }, "expected a number"));
  EXPECT_TRUE(throws_with([&] { f.get("t.u8").as_bool(); }, "expected a bool"));
  EXPECT_TRUE(throws_with([&] { f.get("t.u8").as_array(); }, "expected an array"));
  EXPECT_TRUE(throws_with([&] { f.get("nope"); }, path + ": missing metadata key 'nope'"));
  EXPECT_TRUE(throws_with([&] { f.get_u64("general.architecture"); }, path + ": general.architecture: expected"));
  EXPECT_TRUE(throws_with([&] { f.get_string("t.u8"); }, path + ": t.u8: expected a string"));
  EXPECT_TRUE(throws_with([&] { f.tensor("nope"); }, path + ": missing tensor 'nope'"));
}

TEST(GgufValueDisplay, ShortForms) {
  using V = GgufValue;
  EXPECT_EQ(V::u32(7).to_display_string(), "7");
  EXPECT_EQ(V::i8(-3).to_display_string(), "-3");
  EXPECT_EQ(V::f32(1e-5f).to_display_string(), "1e-05");
  EXPECT_EQ(V::f64(0.5).to_display_string(), "0.5");
  EXPECT_EQ(V::boolean(true).to_display_string(), "true");
  EXPECT_EQ(V::str("a\"b\n").to_display_string(), "\"a\\\"b\\n\"");
  EXPECT_EQ(V::array(GgufType::UINT8, {}).to_display_string(), "[]");
  EXPECT_EQ(V::string_array({"a", "b", "c"}).to_display_string(2), "[\"a\", \"b\", ... (3 items)]");
  const std::string long_text = V::str(std::string(500, 'y')).to_display_string();
  EXPECT_LT(long_text.size(), 100u);
  EXPECT_NE(long_text.find("(500 bytes)"), std::string::npos);
  EXPECT_EQ(gguf_type_name(GgufType::FLOAT32), "float32");
  EXPECT_EQ(gguf_type_name(static_cast<GgufType>(99)), "unknown");
}

// ---------------------------------------------------------------------------------------------
// Hostile and broken files

TEST_F(GgufTest, TruncatedAtEveryByteBoundary) {
  const SmallFile s = small_file();
  const std::string path = file("truncated.gguf");
  for (size_t n = 0; n < s.data_end; ++n) {
    write_all(path, s.bytes, n);
    EXPECT_TRUE(open_fails(path, n == 0 ? "empty file" : n < 4 ? "truncated file" : "")) << "prefix of " << n << " bytes";
  }
  // Only the zero padding after the last tensor may be missing.
  for (size_t n = s.data_end; n <= s.bytes.size(); ++n) {
    write_all(path, s.bytes, n);
    EXPECT_NO_THROW(GgufFile::open(path)) << n;
  }
  // The same for a file with every value type, nested arrays and a tensor.
  const Bytes data = pattern(64, 7);
  const std::string rich = file("rich.gguf");
  write_gguf(rich, rich_metadata(), {{"w", {32, 2}, TensorType::Q4_0, data.data(), 36}});
  const Bytes rich_bytes = read_all(rich);
  const size_t rich_end = GgufFile::open(rich).data_offset() + 36;
  for (size_t n = 0; n < rich_end; ++n) {
    write_all(path, rich_bytes, n);
    EXPECT_TRUE(open_fails(path, "")) << "prefix of " << n << " bytes of the rich file";
  }

  // Spot checks of the wording at a few cut points.
  write_all(path, s.bytes, s.t1_type + 2);
  EXPECT_TRUE(open_fails(path, "truncated file: tensor info 1 ('t1') needs 4 bytes at offset " +
                                   std::to_string(s.t1_type) + ", file has " + std::to_string(s.t1_type + 2)));
  write_all(path, s.bytes, s.kb_value);
  EXPECT_TRUE(open_fails(path, "truncated file: metadata entry 2 ('k.b') needs 1 bytes"));
  write_all(path, s.bytes, s.data_offset + 10);
  EXPECT_TRUE(open_fails(path, "truncated file: tensor 't0' needs 64 bytes"));
}

// Random byte corruption: every outcome must be a clean open or a tappa::Error, never a crash.
TEST_F(GgufTest, RandomCorruptionNeverCrashes) {
  const SmallFile s = small_file();
  const std::string path = file("fuzz.gguf");
  const Bytes data = pattern(64, 7);
  write_gguf(path, rich_metadata(), {{"w", {32, 2}, TensorType::Q4_0, data.data(), 36}});
  const Bytes rich = read_all(path);
  const size_t rich_header = GgufFile::open(path).data_offset();
  std::mt19937 rng(12345);
  int failures = 0;
  for (int iter = 0; iter < 1000; ++iter) {
    const bool use_rich = iter % 3 == 2;
    Bytes b = use_rich ? rich : s.bytes;
    const size_t header = use_rich ? rich_header : s.data_offset;  // where parsing happens
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      const size_t at = rng() % header;
      b[at] = (rng() % 3 == 0) ? 0xFF : static_cast<uint8_t>(rng());
    }
    write_all(path, b);
    try {
      GgufFile::open(path);
    } catch (const Error& e) {
      ++failures;
      ASSERT_EQ(std::string(e.what()).rfind(path + ": ", 0), 0u) << e.what();
    }
  }
  EXPECT_GT(failures, 50);
}

class GgufHostile : public GgufTest {
 protected:
  // Writes the small file with `edit` applied and expects open to fail with `phrase`.
  template <class Edit>
  ::testing::AssertionResult fails_after(Edit&& edit, const std::string& phrase) {
    SmallFile s = small_file();
    edit(s);
    const std::string path = file("hostile.gguf");
    write_all(path, s.bytes);
    return open_fails(path, phrase);
  }
};

TEST_F(GgufHostile, NotAFile) {
  EXPECT_TRUE(open_fails(file("missing.gguf"), "cannot open: No such file or directory"));
  EXPECT_TRUE(open_fails(dir_.string(), "cannot open: is a directory"));
  const std::string fifo = file("fifo.gguf");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_TRUE(open_fails(fifo, "not a regular file"));
  write_all(file("empty.gguf"), {});
  EXPECT_TRUE(open_fails(file("empty.gguf"), "empty file"));
}

TEST_F(GgufHostile, BadMagic) {
  EXPECT_TRUE(fails_after([](SmallFile& s) { s.bytes[0] = 'g'; }, "not a GGUF file (bad magic 'gGUF'"));
  const std::string path = file("text.gguf");
  write_all(path, Bytes{'h', 'e', 'l', 'l', 'o', '\n', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});
  EXPECT_TRUE(open_fails(path, "bad magic 'hell'"));
}

TEST_F(GgufHostile, Versions) {
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint32_t>(s.bytes, s.version, 1); }, "GGUF version 1 is not supported"));
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint32_t>(s.bytes, s.version, 0xFFFFFFFF); },
                          "unsupported GGUF version 4294967295"));
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint32_t>(s.bytes, s.version, 4); }, "unsupported GGUF version 4"));
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint32_t>(s.bytes, s.version, 0); }, "unsupported GGUF version 0"));
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint32_t>(s.bytes, s.version, 0x03000000); }, "big-endian GGUF file"));
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint32_t>(s.bytes, s.version, 0x02000000); }, "big-endian"));
}

TEST_F(GgufHostile, AbsurdCounts) {
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint64_t>(s.bytes, s.n_tensors, uint64_t{1} << 60); },
                          "tensor count 1152921504606846976 is impossible"));
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint64_t>(s.bytes, s.n_tensors, UINT64_MAX); }, "tensor count"));
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint64_t>(s.bytes, s.n_kv, uint64_t{1} << 60); },
                          "metadata key-value count 1152921504606846976 is impossible"));
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint64_t>(s.bytes, s.n_kv, UINT64_MAX); }, "key-value count"));
  // Plausible but too large for the bytes that remain after the metadata.
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint64_t>(s.bytes, s.n_tensors, 7); }, "tensor count 7 is impossible"));
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint64_t>(s.bytes, s.arch_key_len, uint64_t{1} << 62); },
                          "metadata entry 0: string length 4611686018427387904"));
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint64_t>(s.bytes, s.arch_key_len, UINT64_MAX); }, "string length"));
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint64_t>(s.bytes, s.arr_count, uint64_t{1} << 61); },
                          "metadata entry 3 ('k.arr'): array of 2305843009213693952 uint16 elements"));
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint64_t>(s.bytes, s.arr_count, UINT64_MAX); }, "array of"));
}

TEST_F(GgufHostile, BadValues) {
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint32_t>(s.bytes, s.kb_type, 13); },
                          "metadata entry 2 ('k.b'): unknown value type 13"));
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint8_t>(s.bytes, s.kb_value, 2); }, "invalid bool value 2"));
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint32_t>(s.bytes, s.arr_count - 4, 77); }, "unknown array element type 77"));
}

TEST_F(GgufHostile, DuplicateKey) {
  EXPECT_TRUE(fails_after([](SmallFile& s) { s.bytes[s.kb_key_last_char] = 'a'; },
                          "duplicate metadata key 'k.a' (entries 1 and 2)"));
}

TEST_F(GgufHostile, EmptyKeyAndDeepNesting) {
  {
    RawWriter w;
    w.b = {'G', 'G', 'U', 'F'};
    w.put<uint32_t>(3);
    w.put<uint64_t>(0);
    w.put<uint64_t>(1);
    w.str("");
    w.put<uint32_t>(0);
    w.put<uint8_t>(0);
    w.put<uint64_t>(0);  // trailing bytes, so that the count check passes and the key is read
    write_all(file("empty_key.gguf"), w.b);
    EXPECT_TRUE(open_fails(file("empty_key.gguf"), "metadata entry 0: empty key"));
  }
  {
    RawWriter w;
    w.b = {'G', 'G', 'U', 'F'};
    w.put<uint32_t>(3);
    w.put<uint64_t>(0);
    w.put<uint64_t>(1);
    w.str("deep");
    w.put<uint32_t>(9);
    for (int i = 0; i < 40; ++i) {  // arrays of one array each, far deeper than allowed
      w.put<uint32_t>(9);
      w.put<uint64_t>(1);
    }
    w.put<uint32_t>(0);
    w.put<uint64_t>(0);
    write_all(file("deep.gguf"), w.b);
    EXPECT_TRUE(open_fails(file("deep.gguf"), "metadata entry 0 ('deep'): arrays nested more than 16 levels deep"));
  }
}

TEST_F(GgufHostile, Alignment) {
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint32_t>(s.bytes, s.align_value, 0); },
                          "general.alignment is 0, must be a nonzero power of two"));
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint32_t>(s.bytes, s.align_value, 3); },
                          "general.alignment is 3, must be a nonzero power of two"));
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint32_t>(s.bytes, s.align_type, 5); },
                          "general.alignment must be a uint32, found int32"));
  // A larger power of two is legal, but t1's offset 64 is then misaligned.
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint32_t>(s.bytes, s.align_value, 1u << 31); },
                          "tensor 't1' has offset 64, not a multiple of the alignment 2147483648"));
  // With t1 moved to offset 0 (overlapping t0), the data section would start past the end of the file,
  // which is found first.
  EXPECT_TRUE(fails_after(
      [](SmallFile& s) {
        patch<uint32_t>(s.bytes, s.align_value, 1u << 31);
        patch<uint64_t>(s.bytes, s.t1_offset, 0);
      },
      "truncated file: the data section would start at offset"));
}

TEST_F(GgufHostile, Dimensions) {
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint32_t>(s.bytes, s.t0_ndims, 0); },
                          "tensor 't0' has 0 dimensions, must have 1 to 4"));
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint32_t>(s.bytes, s.t1_ndims, 5); },
                          "tensor 't1' has 5 dimensions, must have 1 to 4"));
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint32_t>(s.bytes, s.t1_ndims, 0xFFFFFFFF); }, "dimensions"));
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<int64_t>(s.bytes, s.t0_dims + 8, 0); },
                          "tensor 't0' has dimension 1 of size 0, must be positive"));
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<int64_t>(s.bytes, s.t0_dims, -8); }, "dimension 0 of size -8"));
  EXPECT_TRUE(fails_after(
      [](SmallFile& s) {
        patch<int64_t>(s.bytes, s.t0_dims, int64_t{1} << 40);
        patch<int64_t>(s.bytes, s.t0_dims + 8, int64_t{1} << 40);
      },
      "tensor 't0' has shape [1099511627776, 1099511627776] whose element count overflows int64"));
  // 2^62 elements fit in int64, but 2^62 F32 values need 2^64 bytes.
  EXPECT_TRUE(fails_after(
      [](SmallFile& s) {
        patch<int64_t>(s.bytes, s.t0_dims, int64_t{1} << 31);
        patch<int64_t>(s.bytes, s.t0_dims + 8, int64_t{1} << 31);
      },
      "tensor 't0' of type F32 with shape [2147483648, 2147483648] has a size in bytes that overflows"));
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<int64_t>(s.bytes, s.t1_dims, 16); },
                          "tensor 't1' of type Q8_0 has row length 16, not a multiple of the block size 32"));
}

TEST_F(GgufHostile, TensorTypeAndOffsets) {
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint32_t>(s.bytes, s.t1_type, 9999); },
                          "tensor 't1' has unknown tensor type 9999"));
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint32_t>(s.bytes, s.t1_type, 4); }, "unknown tensor type 4"));
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint64_t>(s.bytes, s.t1_offset, 65); },
                          "tensor 't1' has offset 65, not a multiple of the alignment 32"));
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint64_t>(s.bytes, s.t1_offset, 1 << 20); },
                          "truncated file: tensor 't1' needs 34 bytes at data offset 1048576"));
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint64_t>(s.bytes, s.t1_offset, 96); }, "tensor 't1' needs 34 bytes"));
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint64_t>(s.bytes, s.t1_offset, UINT64_MAX - 31); }, "tensor 't1'"));
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint64_t>(s.bytes, s.t1_offset, 32); },
                          "tensors 't0' (data bytes 0..64) and 't1' (data bytes 32..66) overlap"));
  EXPECT_TRUE(fails_after([](SmallFile& s) { patch<uint64_t>(s.bytes, s.t1_offset, 0); }, "overlap"));
  // Offsets need not be in file order; a gap is fine as long as nothing overlaps.
  SmallFile s = small_file();
  patch<uint64_t>(s.bytes, s.t0_offset, 64);
  patch<uint64_t>(s.bytes, s.t1_offset, 0);
  write_all(file("swapped.gguf"), s.bytes);
  EXPECT_NO_THROW(GgufFile::open(file("swapped.gguf")));
}

TEST_F(GgufHostile, DuplicateTensorName) {
  EXPECT_TRUE(fails_after([](SmallFile& s) { s.bytes[s.t1_name_last_char] = '0'; },
                          "duplicate tensor name 't0' (tensor infos 0 and 1)"));
}

TEST_F(GgufHostile, NamesWithControlCharactersStayOnOneLine) {
  EXPECT_TRUE(fails_after(
      [](SmallFile& s) {
        s.bytes[s.t1_name_last_char] = '\n';
        patch<uint32_t>(s.bytes, s.t1_type, 9999);
      },
      "tensor 't\\x0a' has unknown tensor type 9999"));
}

// ---------------------------------------------------------------------------------------------
// Writer validation

TEST_F(GgufTest, WriterRejectsInvalidInput) {
  const std::string path = file("bad.gguf");
  const auto md = small_metadata();
  const auto ts = small_tensors();
  auto expect_write_error = [&](const std::string& phrase, auto metadata, auto tensors, uint64_t alignment = 32) {
    EXPECT_TRUE(write_fails(path, phrase, [&] { write_gguf(path, metadata, tensors, alignment); })) << phrase;
  };
  auto without_alignment = md;
  without_alignment.pop_back();

  expect_write_error("alignment 0 is not a power of two", without_alignment, ts, 0);
  expect_write_error("alignment 3 is not a power of two", without_alignment, ts, 3);
  expect_write_error("general.alignment = 32 (uint32) disagrees with the alignment argument 64", md, ts, 64);

  auto dup_key = md;
  dup_key.push_back({"k.a", GgufValue::u32(1)});
  expect_write_error("duplicate metadata key 'k.a'", dup_key, ts);
  auto empty_key = md;
  empty_key.push_back({"", GgufValue::u32(1)});
  expect_write_error("empty metadata key", empty_key, ts);
  auto out_of_range = md;
  out_of_range.push_back({"x", GgufValue{GgufType::UINT8, uint64_t{300}}});
  expect_write_error("metadata key 'x': value 300 does not fit in uint8", out_of_range, ts);
  auto negative = md;
  negative.push_back({"x", GgufValue{GgufType::UINT32, int64_t{-1}}});
  expect_write_error("value -1 does not fit in uint32", negative, ts);
  auto wrong_alt = md;
  wrong_alt.push_back({"x", GgufValue{GgufType::STRING, uint64_t{1}}});
  expect_write_error("type string needs a std::string value", wrong_alt, ts);
  auto mixed = md;
  mixed.push_back({"x", GgufValue::array(GgufType::UINT32, {GgufValue::u32(1), GgufValue::u16(2)})});
  expect_write_error("array element 1 has type uint16, the array holds uint32", mixed, ts);

  auto dup_name = ts;
  dup_name[1].name = "t0";
  expect_write_error("duplicate tensor name 't0'", md, dup_name);
  auto wrong_bytes = ts;
  wrong_bytes[1].n_bytes = 33;
  expect_write_error("tensor 't1' has n_bytes 33 but its type Q8_0 and shape need 34", md, wrong_bytes);
  auto bad_block = ts;
  bad_block[1].shape = {16};
  expect_write_error("not a multiple of the block size", md, bad_block);
  auto bad_type = ts;
  bad_type[1].type = static_cast<TensorType>(9999);
  expect_write_error("unknown tensor type 9999", md, bad_type);
  auto no_data = ts;
  no_data[1].data = nullptr;
  expect_write_error("tensor 't1' has no data", md, no_data);

  EXPECT_TRUE(write_fails(file("no/such/dir/x.gguf"), "cannot create",
                          [&] { write_gguf(file("no/such/dir/x.gguf"), md, ts); }));
}

// ---------------------------------------------------------------------------------------------
// The real default model

TEST(GgufRealModel, SmolLM2ParsesCompletely) {
  const std::string path = TAPPA_SOURCE_DIR "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!fs::exists(path)) GTEST_SKIP() << path << " is missing; run scripts/fetch_model.sh to fetch it";
  const GgufFile f = GgufFile::open(path);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.tensors().size(), 272u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_u64("llama.block_count"), 30u);
  EXPECT_EQ(f.get("tokenizer.ggml.tokens").as_array().element_type, GgufType::STRING);
  EXPECT_EQ(f.get("tokenizer.ggml.tokens").as_array().values.size(), 49152u);
  const GgufTensorInfo& embd = f.tensor("token_embd.weight");
  EXPECT_EQ(embd.type, TensorType::Q8_0);
  EXPECT_EQ(embd.shape, (std::vector<int64_t>{576, 49152}));
  EXPECT_EQ(embd.n_bytes, 576u / 32u * 34u * 49152u);
  // Every tensor lies inside the file, and the last one ends at the (aligned) end of the data.
  uint64_t end = 0;
  for (const GgufTensorInfo& t : f.tensors()) end = std::max(end, t.offset + t.n_bytes);
  EXPECT_LE(f.data_offset() + end, f.file_size());
}

}  // namespace
}  // namespace tappa

#include "kv/kv_format.h"

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "quant/quant.h"
#include "tappa/error.h"

namespace tappa {

const char* kv_type_name(KvType t) {
  switch (t) {
    case KvType::f32: return "f32";
    case KvType::f16: return "f16";
    case KvType::bf16: return "bf16";
    case KvType::q8_0: return "q8_0";
    case KvType::q4_0: return "q4_0";
  }
  return "?";
}

std::optional<KvType> parse_kv_type(std::string_view name) {
  for (KvType t : {KvType::f32, KvType::f16, KvType::bf16, KvType::q8_0, KvType::q4_0})
    if (name == kv_type_name(t)) return t;
  return std::nullopt;
}

bool kv_type_fits(KvType t, int head_dim) { return head_dim > 0 && (!kv_type_is_quantized(t) || head_dim % 32 == 0); }

size_t kv_row_bytes(KvType t, int head_dim) {
  const size_t d = static_cast<size_t>(head_dim);
  switch (t) {
    case KvType::f32: return d * 4;
    case KvType::f16:
    case KvType::bf16: return d * 2;
    case KvType::q8_0: return d / 32 * 34;
    case KvType::q4_0: return d / 32 * 18;
  }
  return 0;
}

std::string kv_format_name(const KvCacheFormat& f) {
  return std::string(kv_type_name(f.k)) + (f.rotate_k ? "+rot" : "") + "/" + kv_type_name(f.v) + (f.rotate_v ? "+rot" : "");
}

KvCacheFormat resolve_kv_format(const KvCacheType& t, int head_dim) {
  for (KvType x : {t.k, t.v})
    if (!kv_type_fits(x, head_dim))
      throw Error(std::string("KV cache type ") + kv_type_name(x) + " needs a head size that is a multiple of 32 (this model: " +
                  std::to_string(head_dim) + ")");
  KvCacheFormat f{t.k, t.v, false, false};
  const bool can_rotate = head_dim % 64 == 0;
  if (t.rotation == KvRotation::on) {
    if (!can_rotate)
      throw Error("KV rotation needs a head size that is a multiple of 64 (this model: " + std::to_string(head_dim) + ")");
    f.rotate_k = f.rotate_v = true;
  } else if (t.rotation == KvRotation::automatic && can_rotate) {
    f.rotate_k = kv_type_is_quantized(t.k);
    f.rotate_v = kv_type_is_quantized(t.v);
  }
  return f;
}

// Default stored-row I/O of a cache whose rows are fp32 (the only layout without a codec).
void KvCache::repeat_lists(int factor) {
  if (factor == 1) return;
  throw Error("this KV cache storage cannot hold one list per query head (granularity=query-head): use the cpu or "
              "reference backend, or granularity=kv-head");
}

void KvCache::read_stored(int layer, int head, int first, int n, void* k, void* v) const {
  if (!format().is_f32()) throw Error("KvCache::read_stored: this cache does not implement its stored layout", ErrorCode::internal);
  read(layer, head, first, n, static_cast<float*>(k), static_cast<float*>(v));
}

void KvCache::append_stored(int layer, int head, const void* k, const void* v, int n) {
  if (!format().is_f32()) throw Error("KvCache::append_stored: this cache does not implement its stored layout", ErrorCode::internal);
  append(layer, head, static_cast<const float*>(k), static_cast<const float*>(v), n, head_dim_);
}

namespace kv {

TensorType kv_tensor_type(KvType t) {
  switch (t) {
    case KvType::f32: return TensorType::F32;
    case KvType::f16: return TensorType::F16;
    case KvType::bf16: return TensorType::BF16;
    case KvType::q8_0: return TensorType::Q8_0;
    case KvType::q4_0: return TensorType::Q4_0;
  }
  return TensorType::F32;
}

int kv_rot_block_k(int head_dim) {
  int b = 64;
  while (head_dim % (2 * b) == 0) b *= 2;
  return head_dim % 64 == 0 ? b : 0;
}

void hadamard_blocks(float* x, int n, int b) {
  const float s = 1.0f / std::sqrt(static_cast<float>(b));
  for (int o = 0; o < n; o += b) {
    float* y = x + o;
    for (int h = 1; h < b; h *= 2)
      for (int i = 0; i < b; i += 2 * h)
        for (int j = i; j < i + h; ++j) {
          const float a = y[j], c = y[j + h];
          y[j] = a + c;
          y[j + h] = a - c;
        }
    for (int i = 0; i < b; ++i) y[i] *= s;
  }
}

void encode_row(KvType t, int rot_block, const float* src, uint8_t* dst, int head_dim, float* tmp) {
  if (rot_block > 0) {
    std::memcpy(tmp, src, sizeof(float) * static_cast<size_t>(head_dim));
    hadamard_blocks(tmp, head_dim, rot_block);
    src = tmp;
  }
  quant::quantize_row(kv_tensor_type(t), src, dst, head_dim);
}

void decode_row(KvType t, int rot_block, const uint8_t* src, float* dst, int head_dim) {
  quant::dequantize_row(kv_tensor_type(t), src, dst, head_dim);
  if (rot_block > 0) hadamard_blocks(dst, head_dim, rot_block);
}

}  // namespace kv
}  // namespace tappa

// Metadata values: type names, typed accessors with range checks, and a short display form.
#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "io/text.h"
#include "tappa/error.h"
#include "tappa/gguf.h"

namespace tappa {

using io::cat;

std::string_view gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::UINT8: return "uint8";
    case GgufType::INT8: return "int8";
    case GgufType::UINT16: return "uint16";
    case GgufType::INT16: return "int16";
    case GgufType::UINT32: return "uint32";
    case GgufType::INT32: return "int32";
    case GgufType::FLOAT32: return "float32";
    case GgufType::BOOL: return "bool";
    case GgufType::STRING: return "string";
    case GgufType::ARRAY: return "array";
    case GgufType::UINT64: return "uint64";
    case GgufType::INT64: return "int64";
    case GgufType::FLOAT64: return "float64";
  }
  return "unknown";
}

GgufValue GgufValue::string_array(const std::vector<std::string>& values) {
  std::vector<GgufValue> items;
  items.reserve(values.size());
  for (const std::string& s : values) items.push_back(str(s));
  return array(GgufType::STRING, std::move(items));
}

namespace {

// "array of string", "uint32", ... for messages about what was found.
std::string describe_type(const GgufValue& v) {
  if (const auto* a = std::get_if<GgufArray>(&v.data)) return cat("array of ", gguf_type_name(a->element_type));
  return std::string(gguf_type_name(v.type));
}

[[noreturn]] void wrong_type(std::string_view what, std::string_view wanted, const GgufValue& v) {
  throw Error(cat(what, ": expected ", wanted, ", found ", describe_type(v)));
}

}  // namespace

uint64_t GgufValue::as_u64(std::string_view what) const {
  if (const auto* u = std::get_if<uint64_t>(&data)) return *u;
  if (const auto* i = std::get_if<int64_t>(&data)) {
    if (*i < 0) throw Error(cat(what, ": value ", *i, " is negative, expected an unsigned integer"));
    return static_cast<uint64_t>(*i);
  }
  wrong_type(what, "an integer", *this);
}

int64_t GgufValue::as_i64(std::string_view what) const {
  if (const auto* i = std::get_if<int64_t>(&data)) return *i;
  if (const auto* u = std::get_if<uint64_t>(&data)) {
    if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      throw Error(cat(what, ": value ", *u, " does not fit in int64"));
    return static_cast<int64_t>(*u);
  }
  wrong_type(what, "an integer", *this);
}

double GgufValue::as_f64(std::string_view what) const {
  if (const auto* d = std::get_if<double>(&data)) return *d;
  if (const auto* u = std::get_if<uint64_t>(&data)) return static_cast<double>(*u);
  if (const auto* i = std::get_if<int64_t>(&data)) return static_cast<double>(*i);
  wrong_type(what, "a number", *this);
}

bool GgufValue::as_bool(std::string_view what) const {
  if (const auto* b = std::get_if<bool>(&data)) return *b;
  wrong_type(what, "a bool", *this);
}

const std::string& GgufValue::as_string(std::string_view what) const {
  if (const auto* s = std::get_if<std::string>(&data)) return *s;
  wrong_type(what, "a string", *this);
}

const GgufArray& GgufValue::as_array(std::string_view what) const {
  if (const auto* a = std::get_if<GgufArray>(&data)) return *a;
  wrong_type(what, "an array", *this);
}

namespace {

void append_float(std::string& out, double d, bool single) {
  if (std::isnan(d)) { out += "nan"; return; }
  if (std::isinf(d)) { out += d < 0 ? "-inf" : "inf"; return; }
  char buf[64];
  // Shortest text that reads back as the same value; float32 values are printed as floats so that
  // 1e-5f shows as "1e-05" rather than "9.999999747378752e-06".
  const auto r = single ? std::to_chars(buf, buf + sizeof buf, static_cast<float>(d))
                        : std::to_chars(buf, buf + sizeof buf, d);
  out.append(buf, r.ptr);
}

// A string in double quotes with control characters escaped, cut to a short prefix (on a UTF-8
// character boundary) for display.
void append_display_string(std::string& out, const std::string& s) {
  constexpr size_t kMaxShown = 60;
  size_t n = s.size();
  if (n > kMaxShown) {
    n = kMaxShown;
    while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;  // don't split a character
  }
  out += '"';
  for (size_t i = 0; i < n; ++i) {
    const char c = s[i];
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          static constexpr char kHex[] = "0123456789abcdef";
          out += "\\x";
          out += kHex[(c >> 4) & 15];
          out += kHex[c & 15];
        } else {
          out += c;
        }
    }
  }
  out += '"';
  if (n < s.size()) out += cat("... (", s.size(), " bytes)");
}

void append_display(std::string& out, const GgufValue& v, size_t max_items) {
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, uint64_t> || std::is_same_v<T, int64_t>) {
          out += cat(x);
        } else if constexpr (std::is_same_v<T, double>) {
          append_float(out, x, v.type == GgufType::FLOAT32);
        } else if constexpr (std::is_same_v<T, bool>) {
          out += x ? "true" : "false";
        } else if constexpr (std::is_same_v<T, std::string>) {
          append_display_string(out, x);
        } else {
          out += '[';
          const size_t shown = x.values.size() < max_items ? x.values.size() : max_items;
          for (size_t i = 0; i < shown; ++i) {
            if (i) out += ", ";
            append_display(out, x.values[i], max_items);
          }
          if (shown < x.values.size()) out += cat(shown ? ", " : "", "... (", x.values.size(), " items)");
          out += ']';
        }
      },
      v.data);
}

}  // namespace

std::string GgufValue::to_display_string(size_t max_items) const {
  std::string out;
  append_display(out, *this, max_items);
  return out;
}

int64_t GgufTensorInfo::rows() const {
  int64_t r = 1;
  for (size_t i = 1; i < shape.size(); ++i) r *= shape[i];  // cannot overflow: validated when read
  return r;
}

}  // namespace tappa

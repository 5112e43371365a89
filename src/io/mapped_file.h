// A whole file mapped read-only into memory (private mapping: nothing can be written back).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace tappa::io {

class MappedFile {
 public:
  // Throws tappa::Error "<path>: cannot open: <reason>" for files that cannot be opened, directories
  // and other non-regular files. An empty file gives size() == 0 and data() == nullptr.
  static MappedFile open(const std::string& path);

  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace tappa::io

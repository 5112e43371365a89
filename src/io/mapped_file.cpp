#include "io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "io/text.h"
#include "tappa/error.h"

namespace tappa::io {

namespace {

// Closes the descriptor on every path out of open(); the mapping outlives it.
struct FdCloser {
  int fd;
  ~FdCloser() { ::close(fd); }
};

}  // namespace

MappedFile MappedFile::open(const std::string& path) {
  // O_NONBLOCK so that a FIFO given by mistake is rejected below instead of blocking forever waiting
  // for a writer; it changes nothing for regular files.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw Error(cat(path, ": cannot open: ", std::strerror(errno)));
  FdCloser closer{fd};

  struct stat st{};
  if (::fstat(fd, &st) != 0) throw Error(cat(path, ": cannot open: ", std::strerror(errno)));
  if (S_ISDIR(st.st_mode)) throw Error(cat(path, ": cannot open: is a directory"));
  if (!S_ISREG(st.st_mode)) throw Error(cat(path, ": cannot open: not a regular file"));

  MappedFile m;
  if (st.st_size == 0) return m;  // mmap rejects length 0; the parser reports the empty file
  m.size_ = static_cast<size_t>(st.st_size);
  // Note: if another process truncates the file while it is mapped, touching the lost pages raises
  // SIGBUS. That cannot be validated away; the file is treated as immutable while open.
  void* p = ::mmap(nullptr, m.size_, PROT_READ, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED) throw Error(cat(path, ": cannot map: ", std::strerror(errno)));
  m.data_ = static_cast<const uint8_t*>(p);
  return m;
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace tappa::io

// lazycrypt-bench-ttfb FILE...: time to first byte. For each FILE, in order: open(O_RDONLY) + read
// of 1 byte + close, timed with CLOCK_MONOTONIC; prints "<nanoseconds> <FILE>" per line.
// The caller makes the files cold (drop the page cache) before calling; nothing is retried.
// Exit status 1 (and a message naming the file) if any open or read fails or returns no byte.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <string>

#include "common/file_io.h"
#include "common/status.h"

namespace {

int64_t NowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

lazycrypt::Result<int64_t> TimeFirstByte(const char* path) {
  const int64_t start = NowNs();
  lazycrypt::UniqueFd fd(open(path, O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return lazycrypt::ErrnoStatus(std::string("open ") + path);
  char byte = 0;
  ssize_t n;
  do {
    n = read(fd.get(), &byte, 1);
  } while (n < 0 && errno == EINTR);
  const int64_t elapsed = NowNs() - start;
  if (n < 0) return lazycrypt::ErrnoStatus(std::string("read ") + path);
  if (n == 0) return lazycrypt::Status::InvalidArgument(std::string(path) + ": empty file, no first byte");
  return elapsed;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s FILE...\n", argv[0]);
    return 2;
  }
  for (int i = 1; i < argc; ++i) {
    auto ns = TimeFirstByte(argv[i]);
    if (!ns.ok()) {
      std::fprintf(stderr, "ttfb: %s\n", ns.status().ToString().c_str());
      return 1;
    }
    std::printf("%lld %s\n", static_cast<long long>(*ns), argv[i]);
  }
  return 0;
}

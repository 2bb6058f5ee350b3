// lazycrypt-bench-delay-proxy: a TCP relay that adds a fixed one-way delay in each direction,
// for the cold-start benchmark's shaped link. The kernel this benchmark runs on may lack
// sch_netem (tc's delay qdisc); tbf limits the rate on the veth pair, and this relay, running in
// the registry's network namespace in front of the registry, adds the latency: every byte read
// from one side is written to the other `delay_ms` later (pipelined: throughput is not limited by
// the delay, as on a real long link). A round trip through it costs 2 * delay_ms.
//
//   usage: lazycrypt-bench-delay-proxy LISTEN_ADDR:PORT UPSTREAM_ADDR:PORT DELAY_MS
//
// Serves until SIGTERM/SIGINT. One thread pair per connection direction (reader, delayed writer).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

bool ParseAddress(const std::string& text, sockaddr_in* out) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos) return false;
  std::memset(out, 0, sizeof(*out));
  out->sin_family = AF_INET;
  if (inet_pton(AF_INET, text.substr(0, colon).c_str(), &out->sin_addr) != 1) return false;
  char* end = nullptr;
  const long port = std::strtol(text.c_str() + colon + 1, &end, 10);
  if (*end != '\0' || port <= 0 || port > 65535) return false;
  out->sin_port = htons(static_cast<uint16_t>(port));
  return true;
}

// One direction of a connection: bytes read from `from` are queued with a due time and written
// to `to` when due. On EOF the write side is shut down after the queued bytes are out.
class DelayedPipe {
 public:
  DelayedPipe(int from, int to, std::chrono::milliseconds delay)
      : from_(from), to_(to), delay_(delay) {}

  void Run() {
    std::thread writer([this] { WriteLoop(); });
    std::vector<char> buf(256 * 1024);
    for (;;) {
      const ssize_t n = ::read(from_, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      std::lock_guard<std::mutex> lock(mu_);
      if (n <= 0) {
        eof_ = true;
        cv_.notify_all();
        break;
      }
      queue_.push_back(Item{Clock::now() + delay_, std::string(buf.data(), static_cast<size_t>(n))});
      cv_.notify_all();
    }
    writer.join();
  }

 private:
  struct Item {
    Clock::time_point due;
    std::string bytes;
  };

  void WriteLoop() {
    for (;;) {
      Item item;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return !queue_.empty() || eof_; });
        if (queue_.empty()) break;  // eof and drained
        item = std::move(queue_.front());
        queue_.pop_front();
      }
      std::this_thread::sleep_until(item.due);
      size_t off = 0;
      while (off < item.bytes.size()) {
        const ssize_t w = ::send(to_, item.bytes.data() + off, item.bytes.size() - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
          ::shutdown(from_, SHUT_RD);  // the peer is gone: stop reading too
          return;
        }
        off += static_cast<size_t>(w);
      }
    }
    ::shutdown(to_, SHUT_WR);
  }

  int from_;
  int to_;
  std::chrono::milliseconds delay_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  bool eof_ = false;
};

void ServeConnection(int client, sockaddr_in upstream_addr, std::chrono::milliseconds delay) {
  const int upstream = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (upstream < 0 ||
      ::connect(upstream, reinterpret_cast<sockaddr*>(&upstream_addr), sizeof(upstream_addr)) != 0) {
    std::fprintf(stderr, "delay-proxy: connect upstream: %s\n", std::strerror(errno));
    if (upstream >= 0) ::close(upstream);
    ::close(client);
    return;
  }
  const int one = 1;
  ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  ::setsockopt(upstream, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  DelayedPipe up(client, upstream, delay);
  DelayedPipe down(upstream, client, delay);
  std::thread t([&up] { up.Run(); });
  down.Run();
  t.join();
  ::close(upstream);
  ::close(client);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s LISTEN_ADDR:PORT UPSTREAM_ADDR:PORT DELAY_MS\n", argv[0]);
    return 2;
  }
  sockaddr_in listen_addr{};
  sockaddr_in upstream_addr{};
  if (!ParseAddress(argv[1], &listen_addr)) {
    std::fprintf(stderr, "delay-proxy: bad listen address '%s' (want IPv4:PORT)\n", argv[1]);
    return 2;
  }
  if (!ParseAddress(argv[2], &upstream_addr)) {
    std::fprintf(stderr, "delay-proxy: bad upstream address '%s' (want IPv4:PORT)\n", argv[2]);
    return 2;
  }
  char* end = nullptr;
  const long delay_ms = std::strtol(argv[3], &end, 10);
  if (*end != '\0' || delay_ms < 0 || delay_ms > 10000) {
    std::fprintf(stderr, "delay-proxy: bad DELAY_MS '%s' (0..10000)\n", argv[3]);
    return 2;
  }
  ::signal(SIGPIPE, SIG_IGN);
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&listen_addr), sizeof(listen_addr)) != 0 ||
      ::listen(fd, 128) != 0) {
    std::fprintf(stderr, "delay-proxy: listen on %s: %s\n", argv[1], std::strerror(errno));
    return 1;
  }
  std::fprintf(stderr, "delay-proxy: %s -> %s, %ld ms each way\n", argv[1], argv[2], delay_ms);
  for (;;) {
    const int client = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      std::fprintf(stderr, "delay-proxy: accept: %s\n", std::strerror(errno));
      return 1;
    }
    std::thread(ServeConnection, client, upstream_addr, std::chrono::milliseconds(delay_ms)).detach();
  }
}

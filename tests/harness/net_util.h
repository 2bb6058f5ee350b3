// Socket helpers shared by the harness's HTTP fakes (FaultProxy, FakeHttpServer). Internal.
#pragma once

#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <string>
#include <string_view>

namespace lazycrypt::harness::net {

using Clock = std::chrono::steady_clock;

inline std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Waits up to 100 ms for fd to become readable; loops until data, EOF, error, or stop.
// Returns bytes read (0 = EOF or stopped, <0 = error).
inline ssize_t RecvSome(int fd, char* buf, size_t n, const std::atomic<bool>& stop,
                 std::chrono::milliseconds limit = std::chrono::seconds(60)) {
  auto deadline = Clock::now() + limit;
  while (!stop.load() && Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    int r = poll(&p, 1, 100);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) continue;
    return recv(fd, buf, n, 0);
  }
  return 0;
}

inline bool SendAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Reads an HTTP head (up to CRLFCRLF) into `head`; anything after goes to `rest`.
inline bool ReadHead(int fd, std::string& head, std::string& rest, const std::atomic<bool>& stop) {
  std::string buf;
  char tmp[16384];
  while (true) {
    auto end = buf.find("\r\n\r\n");
    if (end != std::string::npos) {
      head = buf.substr(0, end + 4);
      rest = buf.substr(end + 4);
      return true;
    }
    if (buf.size() > (1 << 20)) return false;
    ssize_t n = RecvSome(fd, tmp, sizeof(tmp), stop);
    if (n <= 0) return false;
    buf.append(tmp, static_cast<size_t>(n));
  }
}

// Value of a header in an HTTP head (case-insensitive name), or "".
inline std::string HeaderValue(const std::string& head, const std::string& name) {
  std::string lower = Lower(head);
  auto pos = lower.find("\r\n" + Lower(name) + ":");
  if (pos == std::string::npos) return "";
  pos += 2 + name.size() + 1;
  auto end = head.find("\r\n", pos);
  std::string v = head.substr(pos, end - pos);
  while (!v.empty() && v.front() == ' ') v.erase(v.begin());
  return v;
}

// The head with any Connection header replaced by `Connection: close`.
inline std::string WithConnectionClose(const std::string& head) {
  std::string out;
  size_t pos = 0;
  bool first = true;
  while (pos < head.size()) {
    auto eol = head.find("\r\n", pos);
    if (eol == std::string::npos) break;
    std::string line = head.substr(pos, eol - pos);
    pos = eol + 2;
    if (line.empty()) break;
    if (!first && Lower(line).rfind("connection:", 0) == 0) continue;
    out += line + "\r\n";
    first = false;
  }
  out += "Connection: close\r\n\r\n";
  return out;
}

}  // namespace lazycrypt::harness::net

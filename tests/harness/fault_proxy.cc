#include "tests/harness/fault_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "common/file_io.h"
#include "tests/harness/net_util.h"

namespace lazycrypt::harness {
namespace {

using namespace net;  // NOLINT
using Clock = std::chrono::steady_clock;

void ResetAndClose(int fd) {
  linger l{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  close(fd);
}

}  // namespace

Result<std::unique_ptr<FaultProxy>> FaultProxy::Start(int upstream_port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus("socket");
  UniqueFd guard(fd);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return ErrnoStatus("bind 127.0.0.1:0");
  if (listen(fd, 64) != 0) return ErrnoStatus("listen");
  socklen_t len = sizeof(addr);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return ErrnoStatus("getsockname");
  std::unique_ptr<FaultProxy> p(new FaultProxy(guard.release(), ntohs(addr.sin_port), upstream_port));
  p->acceptor_ = std::thread([raw = p.get()] { raw->AcceptLoop(); });
  return p;
}

FaultProxy::~FaultProxy() {
  stop_.store(true);
  if (acceptor_.joinable()) acceptor_.join();
  std::vector<std::thread> workers;
  {
    std::lock_guard<std::mutex> l(threads_mu_);
    workers.swap(workers_);
  }
  for (auto& t : workers) t.join();
  close(listen_fd_);
}

void FaultProxy::AddFault(FaultRule rule) {
  std::lock_guard<std::mutex> l(mu_);
  rules_.push_back(std::move(rule));
}

void FaultProxy::ClearFaults() {
  std::lock_guard<std::mutex> l(mu_);
  rules_.clear();
}

std::vector<std::string> FaultProxy::RequestLines() const {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<std::string> lines;
  for (const auto& h : heads_) lines.push_back(h.substr(0, h.find("\r\n")));
  return lines;
}

std::vector<std::string> FaultProxy::RequestHeads() const {
  std::lock_guard<std::mutex> l(mu_);
  return heads_;
}

std::vector<ProxiedRequest> FaultProxy::Requests() const {
  std::lock_guard<std::mutex> l(mu_);
  return proxied_;
}

void FaultProxy::Record(ProxiedRequest r) {
  body_bytes_.fetch_add(r.response_body_bytes);
  std::lock_guard<std::mutex> l(mu_);
  proxied_.push_back(std::move(r));
}

bool FaultProxy::TakeFault(const std::string& head, FaultRule* out) {
  const std::string request_line = head.substr(0, head.find("\r\n"));
  std::lock_guard<std::mutex> l(mu_);
  heads_.push_back(head);
  for (auto& r : rules_) {
    if (r.count == 0) continue;
    if (!r.match.empty() && request_line.find(r.match) == std::string::npos) continue;
    if (r.count > 0) --r.count;
    *out = r;
    return true;
  }
  return false;
}

void FaultProxy::AcceptLoop() {
  while (!stop_.load()) {
    pollfd p{listen_fd_, POLLIN, 0};
    int r = poll(&p, 1, 100);
    if (r <= 0) continue;
    int c = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    std::lock_guard<std::mutex> l(threads_mu_);
    workers_.emplace_back([this, c] { Serve(c); });
  }
}

void FaultProxy::Serve(int client_fd) {
  bool closed = false;
  auto close_client = [&] {
    if (!closed) close(client_fd);
    closed = true;
  };
  std::string head, rest;
  if (!ReadHead(client_fd, head, rest, stop_)) {
    close_client();
    return;
  }
  requests_.fetch_add(1);
  std::string request_line = head.substr(0, head.find("\r\n"));
  bool is_head = request_line.rfind("HEAD ", 0) == 0;
  // Read the request body (Content-Length only; our clients do not send chunked requests).
  uint64_t body_len = std::strtoull(HeaderValue(head, "Content-Length").c_str(), nullptr, 10);
  char tmp[65536];
  while (rest.size() < body_len) {
    ssize_t n = RecvSome(client_fd, tmp, sizeof(tmp), stop_);
    if (n <= 0) {
      close_client();
      return;
    }
    rest.append(tmp, static_cast<size_t>(n));
  }

  FaultRule rule;
  bool faulty = TakeFault(head, &rule);
  if (faulty) {
    faults_.fetch_add(1);
    switch (rule.fault) {
      case Fault::kReset:
        ResetAndClose(client_fd);
        closed = true;
        return;
      case Fault::kHttp500:
      case Fault::kHttp429:
      case Fault::kHttp503: {
        std::string status = rule.fault == Fault::kHttp500   ? "500 Internal Server Error"
                             : rule.fault == Fault::kHttp429 ? "429 Too Many Requests"
                                                             : "503 Service Unavailable";
        std::string body = "{\"errors\":[{\"code\":\"INJECTED\",\"message\":\"fault proxy\"}]}";
        std::string resp = "HTTP/1.1 " + status + "\r\nContent-Type: application/json\r\n";
        if (rule.fault != Fault::kHttp500) {
          resp += "Retry-After: " + std::to_string(rule.retry_after_seconds) + "\r\n";
        }
        resp += "Content-Length: " + std::to_string(is_head ? 0 : body.size()) +
                "\r\nConnection: close\r\n\r\n" + (is_head ? "" : body);
        SendAll(client_fd, resp);
        close_client();
        return;
      }
      case Fault::kStall: {
        auto until = Clock::now() + rule.stall;
        while (!stop_.load() && Clock::now() < until) {
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        close_client();
        return;
      }
      case Fault::kTruncate:
      case Fault::kLoseResponse:
        break;  // forward below, then cut or drop the answer
    }
  }

  int up = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  UniqueFd up_guard(up);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(upstream_port_));
  if (up < 0 || connect(up, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ResetAndClose(client_fd);
    closed = true;
    return;
  }
  if (!SendAll(up, WithConnectionClose(head)) || !SendAll(up, rest)) {
    close_client();
    return;
  }
  ProxiedRequest record;
  record.request_line = request_line;
  record.range = HeaderValue(head, "Range");
  auto parse_status = [](const std::string& response_head) {
    // "HTTP/1.1 206 Partial Content"
    auto sp = response_head.find(' ');
    return sp == std::string::npos ? 0 : std::atoi(response_head.c_str() + sp + 1);
  };
  if (faulty && rule.fault == Fault::kLoseResponse) {
    std::string rhead, rbody;
    if (ReadHead(up, rhead, rbody, stop_)) record.status = parse_status(rhead);
    ResetAndClose(client_fd);
    closed = true;
    Record(std::move(record));
    return;
  }
  bool truncate = faulty && rule.fault == Fault::kTruncate;
  if (!truncate) {
    std::string response_head;  // until its end is seen
    bool in_body = false;
    while (true) {
      ssize_t n = RecvSome(up, tmp, sizeof(tmp), stop_);
      if (n <= 0) break;
      std::string_view chunk(tmp, static_cast<size_t>(n));
      if (!in_body) {
        response_head.append(chunk);
        auto end = response_head.find("\r\n\r\n");
        if (end != std::string::npos) {
          in_body = true;
          record.status = parse_status(response_head);
          record.response_body_bytes += response_head.size() - (end + 4);
        }
      } else {
        record.response_body_bytes += chunk.size();
      }
      if (!SendAll(client_fd, chunk)) break;
    }
    close_client();
    Record(std::move(record));
    return;
  }
  std::string rhead, rbody;
  if (!ReadHead(up, rhead, rbody, stop_)) {
    close_client();
    return;
  }
  uint64_t len = std::strtoull(HeaderValue(rhead, "Content-Length").c_str(), nullptr, 10);
  uint64_t keep = len / 2;
  while (rbody.size() < keep) {
    ssize_t n = RecvSome(up, tmp, sizeof(tmp), stop_);
    if (n <= 0) break;
    rbody.append(tmp, static_cast<size_t>(n));
  }
  SendAll(client_fd, rhead);
  SendAll(client_fd, std::string_view(rbody).substr(0, keep));
  close_client();
  record.status = parse_status(rhead);
  record.response_body_bytes = std::min<uint64_t>(keep, rbody.size());
  Record(std::move(record));
}

}  // namespace lazycrypt::harness

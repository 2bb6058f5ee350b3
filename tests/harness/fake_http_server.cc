#include "tests/harness/fake_http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/file_io.h"
#include "tests/harness/net_util.h"

namespace lazycrypt::harness {

std::string FakeRequest::Header(const std::string& name) const { return net::HeaderValue(head, name); }

Result<std::unique_ptr<FakeHttpServer>> FakeHttpServer::Start(Handler handler) {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoStatus("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return ErrnoStatus("bind 127.0.0.1:0");
  if (listen(fd.get(), 64) != 0) return ErrnoStatus("listen");
  socklen_t len = sizeof(addr);
  if (getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) return ErrnoStatus("getsockname");
  std::unique_ptr<FakeHttpServer> s(new FakeHttpServer(fd.release(), ntohs(addr.sin_port), std::move(handler)));
  s->acceptor_ = std::thread([raw = s.get()] { raw->AcceptLoop(); });
  return s;
}

FakeHttpServer::~FakeHttpServer() {
  stop_.store(true);
  if (acceptor_.joinable()) acceptor_.join();
  std::vector<std::thread> workers;
  {
    std::lock_guard<std::mutex> l(mu_);
    workers.swap(workers_);
  }
  for (auto& t : workers) t.join();
  close(listen_fd_);
}

std::vector<FakeRequest> FakeHttpServer::Requests() const {
  std::lock_guard<std::mutex> l(mu_);
  return requests_;
}

void FakeHttpServer::AcceptLoop() {
  while (!stop_.load()) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    int c = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    std::lock_guard<std::mutex> l(mu_);
    workers_.emplace_back([this, c] { Serve(c); });
  }
}

void FakeHttpServer::Serve(int fd) {
  UniqueFd guard(fd);
  FakeRequest req;
  std::string rest;
  if (!net::ReadHead(fd, req.head, rest, stop_)) return;
  std::string line = req.head.substr(0, req.head.find("\r\n"));
  auto sp1 = line.find(' ');
  auto sp2 = line.find(' ', sp1 + 1);
  if (sp1 == std::string::npos || sp2 == std::string::npos) return;
  req.method = line.substr(0, sp1);
  req.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  uint64_t body_len = std::strtoull(req.Header("Content-Length").c_str(), nullptr, 10);
  char tmp[65536];
  while (rest.size() < body_len) {
    ssize_t n = net::RecvSome(fd, tmp, sizeof(tmp), stop_);
    if (n <= 0) return;
    rest.append(tmp, static_cast<size_t>(n));
  }
  req.body = rest.substr(0, body_len);
  {
    std::lock_guard<std::mutex> l(mu_);
    requests_.push_back(req);
  }
  FakeResponse resp = handler_(req);
  std::string out = "HTTP/1.1 " + std::to_string(resp.status) + " Fake\r\n";
  for (const auto& [k, v] : resp.headers) out += k + ": " + v + "\r\n";
  out += "Content-Length: " + std::to_string(resp.body.size()) + "\r\nConnection: close\r\n\r\n";
  if (req.method != "HEAD") out += resp.body;
  net::SendAll(fd, out);
}

}  // namespace lazycrypt::harness

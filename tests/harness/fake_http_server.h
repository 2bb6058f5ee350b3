// A scripted HTTP/1.1 server for unit tests of HTTP clients: 127.0.0.1:<free port>, one request
// per connection (`Connection: close`), each answered by a handler function. Use it to fake what
// a real registry cannot easily do (bearer-token servers, odd multipart answers).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/status.h"

namespace lazycrypt::harness {

struct FakeRequest {
  std::string method;  // "GET"
  std::string target;  // "/v2/app/manifests/latest?x=y"
  std::string head;    // request line and headers, CRLF separated
  std::string body;
  // Value of a header (case-insensitive name), "" when absent.
  std::string Header(const std::string& name) const;
  // The target without the query string.
  std::string Path() const { return target.substr(0, target.find('?')); }
};

struct FakeResponse {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;  // Content-Length is set from it
};

class FakeHttpServer {
 public:
  // The handler runs on server threads, possibly concurrently: it must be thread-safe.
  using Handler = std::function<FakeResponse(const FakeRequest&)>;
  static Result<std::unique_ptr<FakeHttpServer>> Start(Handler handler);
  ~FakeHttpServer();
  FakeHttpServer(const FakeHttpServer&) = delete;
  FakeHttpServer& operator=(const FakeHttpServer&) = delete;

  int port() const { return port_; }
  std::string host() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string url() const { return "http://" + host(); }
  // Requests served so far (in arrival order).
  std::vector<FakeRequest> Requests() const;

 private:
  FakeHttpServer(int fd, int port, Handler h) : listen_fd_(fd), port_(port), handler_(std::move(h)) {}
  void AcceptLoop();
  void Serve(int fd);

  int listen_fd_;
  int port_;
  Handler handler_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  std::vector<FakeRequest> requests_;
  std::thread acceptor_;
  std::vector<std::thread> workers_;  // guarded by mu_
};

}  // namespace lazycrypt::harness

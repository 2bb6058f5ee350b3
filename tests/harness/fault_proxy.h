// A fault-injecting HTTP/1.1 proxy for tests: listens on 127.0.0.1:<free port>, forwards each
// request to an upstream 127.0.0.1 port (one upstream connection per request, `Connection: close`),
// and injects faults into chosen requests: connection resets, 500 / 429 with Retry-After,
// truncated bodies, stalls. Point a client at host() instead of the registry's.
//
// Faults are rules matched in order against the request line ("GET /v2/app/blobs/sha256:...
// HTTP/1.1"); each rule fires for its next `count` matching requests, then is spent.
// Thread-safe: rules may be added while requests flow.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"

namespace lazycrypt::harness {

enum class Fault {
  kReset,       // close the client connection with RST before answering
  kHttp500,     // answer 500 without contacting upstream
  kHttp429,     // answer 429 with Retry-After: retry_after_seconds
  kHttp503,     // answer 503 with Retry-After: retry_after_seconds
  kTruncate,    // forward, but cut the response body in half and close
  kStall,       // accept the request and send nothing for stall (or until the proxy stops)
  kLoseResponse,  // forward, let upstream answer, then reset the client: the request took
                  // effect but its sender never learns it
};

struct FaultRule {
  Fault fault = Fault::kReset;
  int count = 1;             // how many matching requests it applies to; -1 = forever
  std::string match;         // substring of the request line; empty matches every request
  int retry_after_seconds = 1;
  std::chrono::milliseconds stall{30000};
};

// One request the proxy forwarded upstream (faulted requests answered by the proxy itself are
// not listed), recorded once its response has been relayed.
struct ProxiedRequest {
  std::string request_line;
  std::string range;                 // the request's Range header value; "" without one
  int status = 0;                    // upstream's response status; 0 if none arrived
  uint64_t response_body_bytes = 0;  // response body bytes relayed to the client
};

class FaultProxy {
 public:
  static Result<std::unique_ptr<FaultProxy>> Start(int upstream_port);
  ~FaultProxy();
  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;

  int port() const { return port_; }
  std::string host() const { return "127.0.0.1:" + std::to_string(port_); }

  void AddFault(FaultRule rule);
  void ClearFaults();
  // Requests seen (complete request heads) and faults injected so far.
  int requests() const { return requests_.load(); }
  int faults_injected() const { return faults_.load(); }
  // Request lines seen, in arrival order.
  std::vector<std::string> RequestLines() const;
  // Whole request heads (request line and headers) seen, in arrival order.
  std::vector<std::string> RequestHeads() const;
  // Forwarded requests in completion order, and the sum of their response body bytes.
  std::vector<ProxiedRequest> Requests() const;
  uint64_t response_body_bytes() const { return body_bytes_.load(); }

 private:
  FaultProxy(int listen_fd, int port, int upstream_port)
      : listen_fd_(listen_fd), port_(port), upstream_port_(upstream_port) {}
  void AcceptLoop();
  void Serve(int client_fd);
  bool TakeFault(const std::string& head, FaultRule* out);
  void Record(ProxiedRequest r);

  int listen_fd_;
  int port_;
  int upstream_port_;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::atomic<int> faults_{0};
  std::atomic<uint64_t> body_bytes_{0};
  mutable std::mutex mu_;
  std::vector<FaultRule> rules_;
  std::vector<std::string> heads_;
  std::vector<ProxiedRequest> proxied_;
  std::thread acceptor_;
  std::mutex threads_mu_;
  std::vector<std::thread> workers_;
};

}  // namespace lazycrypt::harness

#include "fusefs/access_log.h"

#include <utility>

namespace lazycrypt::fusefs {

bool AccessLog::Add(std::string_view path, size_t source) {
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, inserted] = seen_.emplace(path);
  if (inserted) order_.push_back(Access{*it, source});
  return inserted;
}

std::vector<AccessLog::Access> AccessLog::Accesses() const {
  std::lock_guard<std::mutex> lock(mu_);
  return order_;
}

size_t AccessLog::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return order_.size();
}

namespace {

class AccessLogRecorder final : public AccessRecorder {
 public:
  AccessLogRecorder(std::shared_ptr<AccessLog> log, size_t source)
      : log_(std::move(log)), source_(source) {}
  void RecordAccess(std::string_view path) override { log_->Add(path, source_); }

 private:
  const std::shared_ptr<AccessLog> log_;
  const size_t source_;
};

}  // namespace

std::shared_ptr<AccessRecorder> NewAccessLogRecorder(std::shared_ptr<AccessLog> log,
                                                     size_t source) {
  return std::make_shared<AccessLogRecorder>(std::move(log), source);
}

std::string FormatAccessList(const std::vector<AccessLog::Access>& accesses) {
  std::string text;
  for (const auto& a : accesses) {
    // A name with a line break cannot be written one per line; such files are left out.
    if (a.path.find_first_of("\r\n") != std::string::npos) continue;
    text += '/';
    text += a.path;
    text += '\n';
  }
  return text;
}

}  // namespace lazycrypt::fusefs

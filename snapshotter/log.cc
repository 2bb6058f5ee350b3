#include "snapshotter/log.h"

#include <unistd.h>

#include <chrono>
#include <ctime>

namespace lazycrypt::snapshotter {

std::string_view LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
  }
  return "unknown";
}

Result<LogLevel> ParseLogLevel(std::string_view name) {
  if (name == "debug") return LogLevel::kDebug;
  if (name == "info") return LogLevel::kInfo;
  if (name == "warn" || name == "warning") return LogLevel::kWarn;
  if (name == "error") return LogLevel::kError;
  return Status::InvalidArgument("unknown log level \"" + std::string(name) +
                                 "\" (debug, info, warn, error)");
}

LogSink StderrLogSink(LogLevel min_level) {
  return [min_level](LogLevel level, std::string_view message) {
    if (level < min_level) return;
    auto now = std::chrono::system_clock::now();
    std::time_t t = std::chrono::system_clock::to_time_t(now);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()) % 1000;
    struct tm tm;
    gmtime_r(&t, &tm);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    std::string line = std::string(stamp) + "." + std::to_string(1000 + ms.count()).substr(1) +
                       "Z " + std::string(LogLevelName(level)) + " " + std::string(message) + "\n";
    // One write per line: concurrent lines do not interleave.
    (void)!::write(STDERR_FILENO, line.data(), line.size());
  };
}

LogSink NullLogSink() {
  return [](LogLevel, std::string_view) {};
}

}  // namespace lazycrypt::snapshotter

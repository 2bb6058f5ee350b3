// Leveled logging for the snapshotter daemon. A Logger is passed explicitly (no global state);
// the daemon's writes "<time> <level> <message>" lines to stderr. Never log keys or plaintext.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace lazycrypt::snapshotter {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

std::string_view LogLevelName(LogLevel level);
// "debug", "info", "warn"/"warning", "error" (case-sensitive). InvalidArgument otherwise.
Result<LogLevel> ParseLogLevel(std::string_view name);

// A sink for log lines. Thread-safe implementations only.
using LogSink = std::function<void(LogLevel level, std::string_view message)>;

// A sink writing lines at or above `min_level` to stderr (one write per line, so concurrent lines
// do not interleave).
LogSink StderrLogSink(LogLevel min_level);

// A sink that drops everything.
LogSink NullLogSink();

}  // namespace lazycrypt::snapshotter

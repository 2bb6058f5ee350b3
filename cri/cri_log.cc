#include <sstream>

#include "cri/cri_client.h"

namespace lazycrypt::cri {

Result<std::string> ParseCriLog(const std::string& log_text) {
  std::string out;
  std::istringstream in(log_text);
  std::string line;
  size_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    // <time> SP <stream> SP <tag> SP <content>; the content may be empty (then no trailing space).
    const size_t time_end = line.find(' ');
    const size_t stream_end = time_end == std::string::npos ? time_end : line.find(' ', time_end + 1);
    if (stream_end == std::string::npos) {
      return Status::Corruption("CRI log line " + std::to_string(number) +
                                ": expected \"<time> <stream> <tag> <text>\"");
    }
    const std::string stream = line.substr(time_end + 1, stream_end - time_end - 1);
    if (stream != "stdout" && stream != "stderr") {
      return Status::Corruption("CRI log line " + std::to_string(number) + ": unknown stream \"" +
                                stream + "\"");
    }
    const size_t tag_end = line.find(' ', stream_end + 1);
    const std::string tag = line.substr(stream_end + 1, tag_end == std::string::npos
                                                            ? std::string::npos
                                                            : tag_end - stream_end - 1);
    // The tag is P (partial) or F (full), possibly followed by ":"-separated extra flags.
    const char kind = tag.empty() ? '\0' : tag[0];
    if (kind != 'P' && kind != 'F') {
      return Status::Corruption("CRI log line " + std::to_string(number) + ": tag \"" + tag +
                                "\" is neither P nor F");
    }
    out += tag_end == std::string::npos ? std::string() : line.substr(tag_end + 1);
    if (kind == 'F') out += '\n';
  }
  return out;
}

}  // namespace lazycrypt::cri

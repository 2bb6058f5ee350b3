#include "fusefs/fuse_resume.h"

#include <linux/fuse.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <cstdio>
#include <fstream>
#include <optional>
#include <sstream>

namespace lazycrypt::fusefs {
namespace {

// Linux 6.9's notify code (include/uapi/linux/fuse.h); older headers lack it.
constexpr int32_t kNotifyResend = 7;

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string UnescapeMountField(const std::string& field) {
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size() && field[i + 1] >= '0' &&
        field[i + 1] <= '7') {
      out.push_back(static_cast<char>((field[i + 1] - '0') * 64 + (field[i + 2] - '0') * 8 +
                                      (field[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(field[i]);
    }
  }
  return out;
}

}  // namespace

std::vector<uint8_t> InitRequestForResume(uint32_t max_request_bytes) {
  fuse_in_header in{};
  fuse_init_in init{};
  in.len = sizeof in + sizeof init;
  in.opcode = FUSE_INIT;
  in.unique = uint64_t{1} << 62;
  init.major = FUSE_KERNEL_VERSION;
  init.minor = FUSE_KERNEL_MINOR_VERSION;
  init.max_readahead = max_request_bytes;
  // What Linux offers a server (fs/fuse/inode.c, fuse_send_init): libfuse keeps, of these, what
  // the filesystem's init callback wants, as it did for the first daemon. FUSE_MAX_PAGES keeps
  // libfuse's receive buffer large enough for max_request_bytes.
  init.flags = FUSE_ASYNC_READ | FUSE_POSIX_LOCKS | FUSE_ATOMIC_O_TRUNC | FUSE_EXPORT_SUPPORT |
               FUSE_BIG_WRITES | FUSE_DONT_MASK | FUSE_SPLICE_WRITE | FUSE_SPLICE_MOVE |
               FUSE_SPLICE_READ | FUSE_FLOCK_LOCKS | FUSE_HAS_IOCTL_DIR | FUSE_AUTO_INVAL_DATA |
               FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO | FUSE_ASYNC_DIO |
               FUSE_WRITEBACK_CACHE | FUSE_NO_OPEN_SUPPORT | FUSE_PARALLEL_DIROPS |
               FUSE_HANDLE_KILLPRIV | FUSE_POSIX_ACL | FUSE_ABORT_ERROR | FUSE_MAX_PAGES |
               FUSE_CACHE_SYMLINKS | FUSE_NO_OPENDIR_SUPPORT | FUSE_EXPLICIT_INVAL_DATA;
  std::vector<uint8_t> out(sizeof in + sizeof init);
  std::memcpy(out.data(), &in, sizeof in);
  std::memcpy(out.data() + sizeof in, &init, sizeof init);
  return out;
}

Status NotifyResend(int fuse_fd) {
  fuse_out_header out{};
  out.len = sizeof out;
  out.error = kNotifyResend;
  out.unique = 0;  // a notification
  ssize_t n;
  do {
    n = ::write(fuse_fd, &out, sizeof out);
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof out)) return Status::Ok();
  if (n < 0 && errno == EINVAL) {
    return Status::Unsupported(
        "the kernel does not know FUSE_NOTIFY_RESEND (Linux >= 6.9): requests the previous "
        "daemon had read but not answered stay unanswered");
  }
  return ErrnoStatus("FUSE_NOTIFY_RESEND");
}

Result<dev_t> FuseMountDevice(const std::filesystem::path& mountpoint, const std::string& subtype) {
  std::ifstream in("/proc/self/mountinfo");
  if (!in) return Status::IoError("cannot read /proc/self/mountinfo");
  const std::string want_type = "fuse." + subtype;
  std::optional<dev_t> found;
  std::string line;
  while (std::getline(in, line)) {
    // id parent major:minor root mountpoint options [optional...] - fstype source superoptions
    std::istringstream fields(line);
    std::string id, parent, devno, root, point;
    if (!(fields >> id >> parent >> devno >> root >> point)) continue;
    const size_t dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream tail(line.substr(dash + 3));
    std::string fstype;
    if (!(tail >> fstype)) continue;
    if (UnescapeMountField(point) != mountpoint.string()) continue;
    // The last one at this path is the one on top.
    found.reset();
    if (fstype != want_type) continue;
    unsigned major_no = 0, minor_no = 0;
    if (std::sscanf(devno.c_str(), "%u:%u", &major_no, &minor_no) != 2) continue;
    found = makedev(major_no, minor_no);
  }
  if (!found) {
    return Status::NotFound("no " + want_type + " mount at '" + mountpoint.string() + "'");
  }
  return *found;
}

}  // namespace lazycrypt::fusefs

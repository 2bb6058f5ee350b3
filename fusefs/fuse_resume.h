// The kernel side of serving a FUSE connection that another process opened: what libfuse 3.14
// has no API for. Kept apart from fuse_fs.cc because it speaks the kernel protocol
// (<linux/fuse.h>) directly.
//
// A FUSE connection lives while any process holds its /dev/fuse fd. A daemon that hands the fd to
// a holder (fdstore/) before it dies leaves the mount in place: the kernel queues the requests
// that arrive meanwhile, and keeps the ones the dead daemon had read but not answered in the
// connection's "processing" list. The next daemon takes the fd back and serves it:
//   1. libfuse needs FUSE_INIT before it serves anything else, but the kernel sent INIT once, to
//      the first daemon. InitRequestForResume() builds that request again (the capabilities a
//      current kernel offers) for fuse_session_process_buf(); libfuse's reply to it names a
//      request the kernel does not know and is dropped there (ENOENT), so the kernel's side of
//      the connection is unchanged.
//   2. NotifyResend() asks the kernel (Linux >= 6.9, FUSE_NOTIFY_RESEND) to queue the requests
//      in "processing" again, so the reads that were in flight when the first daemon died are
//      answered instead of waiting forever.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/status.h"

namespace lazycrypt::fusefs {

// A FUSE_INIT request as the kernel sends it, for libfuse's own INIT handling. `max_request_bytes`
// as MountOptions (libfuse derives its receive buffer from it: it must be what the first daemon
// negotiated). The unique ID is one the kernel never assigns (bit 62).
std::vector<uint8_t> InitRequestForResume(uint32_t max_request_bytes);

// Writes FUSE_NOTIFY_RESEND to `fuse_fd`. Unsupported on kernels before 6.9 (they answer EINVAL):
// requests the previous daemon had read stay unanswered there (README, "Restarts").
Status NotifyResend(int fuse_fd);

// The device (0:N, N the FUSE connection number) of the FUSE mount of type `fuse.<subtype>` at
// `mountpoint`, read from /proc/self/mountinfo without touching the mount itself (a stat would
// wait for a daemon that may not serve it yet). NotFound when no such mount is there.
Result<dev_t> FuseMountDevice(const std::filesystem::path& mountpoint, const std::string& subtype);

}  // namespace lazycrypt::fusefs

// One message with file descriptors over a unix socket (SCM_RIGHTS), for the holder and its client.
// Allocation-free and errno-valued, so that the holder's loop allocates nothing per message.
// Internal to fdstore/.
#pragma once

#include <sys/types.h>

#include <cstddef>

#include "common/file_io.h"
#include "fdstore/holder_protocol.h"

namespace lazycrypt::fdstore {

// The fds that arrived with one message, each close-on-exec and owned here (closed unless moved
// out). `control_truncated`: the peer sent more than kMaxFdsPerMessage fds; the kernel closed the
// ones that did not fit.
struct ReceivedFds {
  UniqueFd fds[protocol::kMaxFdsPerMessage];
  size_t count = 0;
  bool control_truncated = false;
};

// Sends `size` bytes as one message, with `fd` attached when fd >= 0. MSG_NOSIGNAL is added to
// `flags`. Returns the bytes sent, or -errno.
ssize_t SendWithFd(int sock, const void* data, size_t size, int fd, int flags);

// Receives one message into buf[0..capacity) and its fds into *fds (reset first). Returns the
// message's bytes (0 at end of stream), or -errno. *message_truncated: the message was longer
// than `capacity` (its tail is lost).
ssize_t ReceiveWithFds(int sock, void* buf, size_t capacity, int flags, ReceivedFds* fds,
                       bool* message_truncated);

}  // namespace lazycrypt::fdstore

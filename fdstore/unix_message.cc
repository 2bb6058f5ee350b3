#include "fdstore/unix_message.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace lazycrypt::fdstore {

ssize_t SendWithFd(int sock, const void* data, size_t size, int fd, int flags) {
  struct iovec iov = {const_cast<void*>(data), size};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  if (fd >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    struct cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
  }
  for (;;) {
    const ssize_t sent = ::sendmsg(sock, &msg, flags | MSG_NOSIGNAL);
    if (sent >= 0) return sent;
    if (errno != EINTR) return -errno;
  }
}

ssize_t ReceiveWithFds(int sock, void* buf, size_t capacity, int flags, ReceivedFds* fds,
                       bool* message_truncated) {
  for (UniqueFd& fd : fds->fds) fd.reset();
  fds->count = 0;
  fds->control_truncated = false;
  *message_truncated = false;

  struct iovec iov = {buf, capacity};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * protocol::kMaxFdsPerMessage)];
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t received;
  for (;;) {
    received = ::recvmsg(sock, &msg, flags | MSG_CMSG_CLOEXEC);
    if (received >= 0) break;
    if (errno != EINTR) return -errno;
  }
  // Take every fd first, so that none leaks whatever else is wrong with the message.
  for (struct cmsghdr* cmsg = CMSG_FIRSTHDR(&msg); cmsg != nullptr; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
    if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
    const size_t n = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < n; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int));
      if (fds->count < protocol::kMaxFdsPerMessage) {
        fds->fds[fds->count++].reset(fd);
      } else {
        ::close(fd);  // cannot happen with a control buffer of this size; never leak one anyway
        fds->control_truncated = true;
      }
    }
  }
  if ((msg.msg_flags & MSG_CTRUNC) != 0) fds->control_truncated = true;
  if ((msg.msg_flags & MSG_TRUNC) != 0) *message_truncated = true;
  return received;
}

}  // namespace lazycrypt::fdstore

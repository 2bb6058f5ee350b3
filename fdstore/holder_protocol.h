// The wire protocol between FdStore's holder client (fd_store.cc) and lazycrypt-fdholder
// (holder_main.cc). Internal to fdstore/.
//
// Transport: a unix SOCK_SEQPACKET socket (one message per send, boundaries kept, reliable),
// mode 0600 in a 0700 directory; the holder accepts peers whose SO_PEERCRED uid is its own or 0.
// Every message is one op/reply byte followed by a name of 0..kMaxFdNameBytes bytes (no NUL);
// fds travel as SCM_RIGHTS ancillary data, exactly one where noted, none elsewhere.
//
//   request                        reply
//   'P' name  + 1 fd               'K'                      held (replacing one of the same name)
//   'R' name                       'K'                      forgotten (also when absent)
//   'L'                            'F' name + 1 fd  ...     one message per held fd (a new fd)
//                                  'E'                      end of the list
//   anything malformed             'X' reason               reason: ASCII, <= kMaxReplyBytes - 1
//
// A request with the wrong number of fds, an invalid name, an unknown op, a truncated message or
// a full holder gets 'X'; the fds it carried are closed. The connection stays usable after 'X'.
// A message of 0 bytes cannot be told from end of stream on SOCK_SEQPACKET: the holder closes.
// A peer of another uid gets 'X' and the connection is closed (it may see ECONNRESET instead when
// its request was still unread).
#pragma once

#include <cstddef>

#include "fdstore/fd_store.h"

namespace lazycrypt::fdstore::protocol {

inline constexpr char kOpPut = 'P';
inline constexpr char kOpRemove = 'R';
inline constexpr char kOpList = 'L';
inline constexpr char kReplyOk = 'K';
inline constexpr char kReplyError = 'X';
inline constexpr char kReplyFd = 'F';
inline constexpr char kReplyEnd = 'E';

inline constexpr size_t kMaxMessageBytes = 1 + kMaxFdNameBytes;
inline constexpr size_t kMaxReplyBytes = 1 + kMaxFdNameBytes;
// Receive buffers have room for this many fds, so that a peer sending more is seen (and its
// extra fds closed) rather than silently truncated.
inline constexpr size_t kMaxFdsPerMessage = 4;

}  // namespace lazycrypt::fdstore::protocol

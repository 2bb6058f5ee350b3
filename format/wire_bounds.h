// Bounds on what parsing an untrusted serialized protobuf message would build, checked on the
// wire before ParseFromArray builds anything.
//
// A TOC (docs/FORMAT.md §4) or a zindex core (§11) is written by the image's author or a key
// holder and arrives zstd-compressed: a few KiB of frame can decompress to hundreds of MiB of
// empty messages (2 bytes each on the wire, a heap object of 100+ bytes each once parsed), or of
// unknown fields (which the full protobuf runtime keeps, one object each). The count limits the
// validation applies after parsing come too late for that: the daemon is out of memory first.
// So before parsing, CheckWireShape walks the wire format once: every field must be one the
// schema names (no unknown fields, at any depth: a newer writer bumps the format's version
// instead), every repeated field's elements are counted against its limit, and nested messages
// are walked the same way. After it passes, what ParseFromArray builds is bounded by the limits,
// not by the decompressed size.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "common/io.h"
#include "common/status.h"

namespace lazycrypt::format {

struct WireMessage;

// One field of a message, as the schema allows it.
struct WireField {
  enum class Kind {
    kVarint,           // a singular varint (integers, bool, enum)
    kBytes,            // a singular length-delimited scalar (bytes, string)
    kRepeatedMessage,  // repeated nested messages (each walked with `message`), counted
    kRepeatedVarint,   // a repeated varint field, packed or not: its values are counted
  };
  constexpr WireField() = default;
  constexpr WireField(int number_in, Kind kind_in, const WireMessage* message_in = nullptr,
                      uint64_t max_total_in = 0, uint64_t max_per_parent_in = UINT64_MAX,
                      std::string_view name_in = {})
      : number(number_in),
        kind(kind_in),
        message(message_in),
        max_total(max_total_in),
        max_per_parent(max_per_parent_in),
        name(name_in) {}

  int number = 0;
  Kind kind = Kind::kVarint;
  const WireMessage* message = nullptr;
  // For the repeated kinds: the most elements in all (over the whole input, however many
  // parent messages they are spread over), and the most in one parent message; the name for
  // errors ("entries", "xattrs").
  uint64_t max_total = 0;
  uint64_t max_per_parent = UINT64_MAX;
  std::string_view name;
};

struct WireMessage {
  std::string_view name;  // for errors: "TOC", "entry"
  std::span<const WireField> fields;
};

// Walks `serialized` as a `root` message. Corruption naming `what` and the problem: "<what>:
// more than N entries", "<what>: unknown field 99 in an entry", "<what>: the protobuf does not
// parse" (a truncated or malformed wire format, a field of the wrong wire type, groups).
// Nesting deeper than the schema is impossible (it has no recursion).
Status CheckWireShape(ByteSpan serialized, const WireMessage& root, std::string_view what);

}  // namespace lazycrypt::format

#include "format/wire_bounds.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>

#include <string>
#include <unordered_map>

namespace lazycrypt::format {
namespace {

using google::protobuf::internal::WireFormatLite;
using google::protobuf::io::CodedInputStream;

class Walker {
 public:
  explicit Walker(std::string_view what) : what_(what) {}

  Status Walk(const uint8_t* data, size_t size, const WireMessage& m) {
    if (size > static_cast<size_t>(INT32_MAX)) return Broken();
    CodedInputStream in(data, static_cast<int>(size));
    std::unordered_map<const WireField*, uint64_t> in_this;  // repeated elements in this message
    while (in.CurrentPosition() < static_cast<int>(size)) {
      const uint32_t tag = in.ReadTag();
      if (tag == 0) return Broken();  // a malformed varint, or field number 0
      const int number = WireFormatLite::GetTagFieldNumber(tag);
      const WireFormatLite::WireType type = WireFormatLite::GetTagWireType(tag);
      const WireField* f = nullptr;
      for (const WireField& candidate : m.fields) {
        if (candidate.number == number) f = &candidate;
      }
      if (f == nullptr) {
        return Status::Corruption(std::string(what_) + ": unknown field " +
                                  std::to_string(number) + " in " + std::string(m.name));
      }
      const bool delimited = type == WireFormatLite::WIRETYPE_LENGTH_DELIMITED;
      switch (f->kind) {
        case WireField::Kind::kVarint:
          if (type != WireFormatLite::WIRETYPE_VARINT) return WrongType(*f, m);
          if (!WireFormatLite::SkipField(&in, tag)) return Broken();
          break;
        case WireField::Kind::kBytes:
          if (!delimited) return WrongType(*f, m);
          if (!WireFormatLite::SkipField(&in, tag)) return Broken();
          break;
        case WireField::Kind::kRepeatedMessage: {
          if (!delimited) return WrongType(*f, m);
          LC_ASSIGN_OR_RETURN(ByteSpan body, Delimited(in, data, size));
          LC_RETURN_IF_ERROR(Count(*f, 1, in_this));
          if (f->message == nullptr) return Status::Internal("wire schema: no message");
          LC_RETURN_IF_ERROR(Walk(body.data(), body.size(), *f->message));
          break;
        }
        case WireField::Kind::kRepeatedVarint:
          if (delimited) {  // packed: as many values as bytes that end a varint
            LC_ASSIGN_OR_RETURN(ByteSpan body, Delimited(in, data, size));
            uint64_t values = 0;
            for (uint8_t b : body) values += (b & 0x80) == 0 ? 1 : 0;
            if (!body.empty() && (body.back() & 0x80) != 0) return Broken();
            LC_RETURN_IF_ERROR(Count(*f, values, in_this));
          } else {
            if (type != WireFormatLite::WIRETYPE_VARINT) return WrongType(*f, m);
            if (!WireFormatLite::SkipField(&in, tag)) return Broken();
            LC_RETURN_IF_ERROR(Count(*f, 1, in_this));
          }
          break;
      }
    }
    return Status::Ok();
  }

 private:
  // The body of the length-delimited field whose tag was just read; `in` is moved past it.
  Result<ByteSpan> Delimited(CodedInputStream& in, const uint8_t* data, size_t size) {
    uint32_t length = 0;
    if (!in.ReadVarint32(&length)) return Broken();
    const int at = in.CurrentPosition();
    if (at < 0 || length > size - static_cast<size_t>(at)) return Broken();
    if (!in.Skip(static_cast<int>(length))) return Broken();
    return ByteSpan(data + at, length);
  }

  Status Count(const WireField& f, uint64_t n,
               std::unordered_map<const WireField*, uint64_t>& in_this) {
    uint64_t& total = totals_[&f];
    uint64_t& here = in_this[&f];
    total += n;
    here += n;
    if (total > f.max_total) {
      return Status::Corruption(std::string(what_) + ": more than " + std::to_string(f.max_total) +
                                " " + std::string(f.name) + " (limit)");
    }
    if (here > f.max_per_parent) {
      return Status::Corruption(std::string(what_) + ": more than " +
                                std::to_string(f.max_per_parent) + " " + std::string(f.name) +
                                " in one (limit)");
    }
    return Status::Ok();
  }

  Status WrongType(const WireField& f, const WireMessage& m) const {
    return Status::Corruption(std::string(what_) + ": field " + std::to_string(f.number) +
                              " of " + std::string(m.name) + " has the wrong wire type");
  }
  Status Broken() const {
    return Status::Corruption(std::string(what_) + ": the protobuf does not parse");
  }

  std::string_view what_;
  std::unordered_map<const WireField*, uint64_t> totals_;
};

}  // namespace

Status CheckWireShape(ByteSpan serialized, const WireMessage& root, std::string_view what) {
  Walker walker(what);
  return walker.Walk(serialized.data(), serialized.size(), root);
}

}  // namespace lazycrypt::format

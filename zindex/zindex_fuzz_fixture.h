// A fixed, deterministic ocicrypt layer (a tar of a few files, gzip in two members, AES-CTR under
// a fixed key) shared by zindex_fuzz.cc and the test that writes and checks its seed corpus, so
// the committed seeds are indexes (serialized Index protos, the core) of exactly this layer; and
// SealFuzzIndex, which seals such a core with the windows it names into a whole sealed blob.
// Test-only: the key and the salt are public.
#pragma once

#include <zlib.h>

#include <cstring>
#include <string>
#include <vector>

#include "common/io.h"
#include "crypto/digest.h"
#include "crypto/ocicrypt_ctr.h"
#include "crypto/secure_buffer.h"
#include "image/layer.h"
#include "tar/tar_writer.h"
#include "zindex/zindex.h"
#include "zindex/zindex.pb.h"
#include "zindex/zindex_internal.h"

namespace lazycrypt::zindex::fuzzing {

struct FuzzLayer {
  std::vector<uint8_t> tar;
  std::vector<uint8_t> blob;  // ciphertext
  image::Descriptor encrypted;
  image::OcicryptLayerCipher cipher;
};

inline std::vector<uint8_t> GzipMember(ByteSpan data, int level) {
  z_stream s{};
  deflateInit2(&s, level, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY);
  std::vector<uint8_t> out(deflateBound(&s, static_cast<uLong>(data.size())) + 64);
  s.next_in = const_cast<uint8_t*>(data.data());
  s.avail_in = static_cast<uInt>(data.size());
  s.next_out = out.data();
  s.avail_out = static_cast<uInt>(out.size());
  deflate(&s, Z_FINISH);
  out.resize(s.total_out);
  deflateEnd(&s);
  return out;
}

inline FuzzLayer MakeFuzzLayer() {
  FuzzLayer layer;
  MemoryOutputStream tar_out;
  {
    tar::TarWriter writer(tar_out);
    std::string text;
    for (int i = 0; i < 12000; ++i) text += "line " + std::to_string(i * 7919 % 10007) + " of a file\n";
    uint32_t x = 1;
    std::string noise(40000, '\0');
    for (char& c : noise) c = static_cast<char>((x = x * 1103515245 + 12345) >> 24);
    tar::Entry dir;
    dir.name = "etc/";
    dir.type = tar::EntryType::kDirectory;
    dir.mode = 0755;
    (void)writer.AppendEntry(dir);
    tar::Entry file;
    file.name = "etc/text";
    file.mode = 0644;
    file.size = text.size();
    (void)writer.AppendEntry(file, AsBytes(text));
    file.name = "etc/noise";
    file.size = noise.size();
    (void)writer.AppendEntry(file, AsBytes(noise));
    tar::Entry link;
    link.name = "etc/link";
    link.type = tar::EntryType::kSymlink;
    link.link_name = "text";
    link.mode = 0777;
    (void)writer.AppendEntry(link);
    (void)writer.Finish();
  }
  layer.tar = tar_out.bytes();
  const size_t cut = layer.tar.size() / 3;
  std::vector<uint8_t> gzip = GzipMember(ByteSpan(layer.tar).first(cut), 6);
  std::vector<uint8_t> second = GzipMember(ByteSpan(layer.tar).subspan(cut), 9);
  gzip.insert(gzip.end(), second.begin(), second.end());

  layer.cipher.key = crypto::SecureBuffer(crypto::kCtrKeySize);
  std::memset(layer.cipher.key.data(), 0x11, crypto::kCtrKeySize);
  layer.cipher.nonce.assign(crypto::kCtrNonceSize, 0x22);
  layer.blob.resize(gzip.size());
  (void)crypto::AesCtrXorAt(layer.cipher.key.span(), layer.cipher.nonce, 0, gzip, layer.blob);
  const crypto::Sha256Digest hmac = crypto::HmacSha256::Of(layer.cipher.key.span(), layer.blob);
  layer.cipher.hmac.assign(hmac.begin(), hmac.end());
  layer.cipher.original.media_type = "application/vnd.oci.image.layer.v1.tar+gzip";
  layer.cipher.original.digest = crypto::OciDigest(crypto::Sha256::Of(gzip));
  layer.cipher.original.size = gzip.size();
  layer.encrypted.media_type = "application/vnd.oci.image.layer.v1.tar+gzip+encrypted";
  layer.encrypted.digest = crypto::OciDigest(crypto::Sha256::Of(layer.blob));
  layer.encrypted.size = layer.blob.size();
  return layer;
}

// A whole sealed blob for `serialized` (an Index proto, possibly hostile) under the layer's key
// and a fixed salt: each span with 0 < window_size <= 32 KiB gets a window sealed as a maker
// would, holding the tar bytes before its out_offset (zeros where there are none), in span order
// in the windows area. With `pin_windows`, the proto's window_offset/window_sealed_size/
// window_sha256 are set to where and what they are (*pinned gets the proto as sealed); without,
// they are left as given, so Open sees hostile window places and digests against a real windows
// area. A proto that does not parse is sealed
// as given with an empty windows area.
inline Result<std::vector<uint8_t>> SealFuzzIndex(const FuzzLayer& layer, ByteSpan serialized,
                                                  bool pin_windows,
                                                  std::string* pinned = nullptr) {
  internal::Salt salt;
  salt.fill(0x33);
  v2::Index proto;
  if (!proto.ParseFromArray(serialized.data(), static_cast<int>(serialized.size()))) {
    return internal::SealIndex(serialized, salt, {}, layer.encrypted.digest, layer.encrypted.size,
                               layer.cipher.key.span());
  }
  std::vector<uint8_t> windows_area;
  std::vector<uint8_t> window;
  for (int i = 0; i < proto.spans_size(); ++i) {
    v2::Span* span = proto.mutable_spans(i);
    const uint64_t size = span->window_size(), out = span->out_offset();
    if (size == 0 || size > kWindowBytes) continue;
    window.assign(static_cast<size_t>(size), 0);
    if (out >= size && out <= layer.tar.size()) {
      std::memcpy(window.data(), layer.tar.data() + (out - size), static_cast<size_t>(size));
    }
    auto sealed = internal::SealWindow(window, static_cast<uint32_t>(i), salt,
                                       layer.encrypted.digest, layer.encrypted.size,
                                       layer.cipher.key.span());
    if (!sealed.ok()) return sealed.status();
    if (pin_windows) {
      span->set_window_offset(windows_area.size());
      span->set_window_sealed_size(static_cast<uint32_t>(sealed->size()));
      const crypto::Sha256Digest digest = crypto::Sha256::Of(*sealed);
      span->set_window_sha256(digest.data(), digest.size());
    }
    windows_area.insert(windows_area.end(), sealed->begin(), sealed->end());
  }
  std::string bytes = pin_windows ? proto.SerializeAsString()
                                  : std::string(serialized.begin(), serialized.end());
  if (pinned != nullptr) *pinned = bytes;
  return internal::SealIndex(AsBytes(bytes), salt, windows_area, layer.encrypted.digest,
                             layer.encrypted.size, layer.cipher.key.span());
}

}  // namespace lazycrypt::zindex::fuzzing

// A fixed, deterministic ocicrypt layer (a tar of a few files, gzip in two members, AES-CTR under
// a fixed key) shared by zindex_fuzz.cc and the test that writes and checks its seed corpus, so
// the committed seeds are indexes of exactly this layer. Test-only: the key is public.
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

}  // namespace lazycrypt::zindex::fuzzing

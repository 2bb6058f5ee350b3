// The payload containerd hands a stream processor on fd 3 (docs in decoder/README section of the
// top-level README): a protobuf google.protobuf.Any whose type_url is imgcrypt's
// "io.containerd.ocicrypt.v1.Payload" and whose value is the JSON of imgcrypt's Go struct
//   {"DecryptConfig":{"Parameters":{"privkeys":["<b64 key file>",...],
//                                   "privkeys-passwords":["<b64 password>",...], ...}},
//    "Descriptor":{"mediaType":...,"digest":...,"size":...,"annotations":{...}}}
// (typeurl marshals non-protobuf types with encoding/json, so [][]byte values are base64 strings).
// containerd passes a payload only to processors whose configured name is one of imgcrypt's
// PayloadToolIDs ("io.containerd.ocicrypt.decoder.v1.tar" / ".tar.gzip"), and only when the client
// adds one: CRI with image_decryption.key_model = "node" (empty DecryptConfig) or imgcrypt's
// `ctr-enc ... --key`.
//
// Thread-safety: free functions, no shared state. Messages never contain key bytes.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/io.h"
#include "common/status.h"
#include "crypto/secure_buffer.h"
#include "image/oci.h"

namespace lazycrypt::decoder {

inline constexpr std::string_view kPayloadTypeUrl = "io.containerd.ocicrypt.v1.Payload";
// The stream processor names containerd's imgcrypt integration sends payloads to.
inline constexpr std::string_view kPayloadToolIdTar = "io.containerd.ocicrypt.decoder.v1.tar";
inline constexpr std::string_view kPayloadToolIdTarGzip =
    "io.containerd.ocicrypt.decoder.v1.tar.gzip";

// A private key handed over in the payload's DecryptConfig ("privkeys"), in wiped memory.
struct PayloadPrivateKey {
  crypto::SecureBuffer key_bytes;                // PEM or DER, as the client read the file
  std::optional<crypto::SecureBuffer> password;  // "privkeys-passwords" entry, when non-empty
};

struct StreamPayload {
  image::Descriptor descriptor;  // the layer being applied, annotations included
  std::vector<PayloadPrivateKey> private_keys;
};

// Parses the bytes read from fd 3. Errors name the part that is wrong:
//   Corruption  "payload: not a protobuf Any" / "payload: Descriptor: ..." / "payload: JSON ..."
//   Unsupported "payload: type_url \"x\" is not io.containerd.ocicrypt.v1.Payload"
Result<StreamPayload> ParseStreamPayload(ByteSpan bytes);

// The inverse, as containerd's imgcrypt client does it (typeurl.MarshalAny + proto.Marshal):
// for tests and tools that drive the decoder like containerd does.
Result<std::string> SerializeStreamPayload(const image::Descriptor& descriptor,
                                           const std::vector<PayloadPrivateKey>& private_keys);

}  // namespace lazycrypt::decoder

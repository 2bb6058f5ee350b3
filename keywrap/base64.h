// Strict base64 codecs for the two alphabets the key envelope uses:
//  - standard base64 with '=' padding (RFC 4648 §4): Go's base64.StdEncoding, used by ocicrypt for
//    annotation values and by encoding/json for []byte fields;
//  - base64url without padding (RFC 4648 §5, RFC 7515 §2): every binary member of a JWE.
// Decoders accept exactly what a conforming encoder emits: no whitespace, no missing or extra
// padding, no non-zero trailing bits. They report Corruption with a message that names the
// offending character position but never echoes the (possibly secret) input.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/io.h"
#include "common/status.h"
#include "crypto/secure_buffer.h"

namespace lazycrypt::keywrap {

std::string Base64Encode(ByteSpan data);
std::string Base64UrlEncode(ByteSpan data);

// Appends the encoding to `out`. Reserve capacity beforehand when `data` is secret so that the
// string never reallocates and leaves an unwiped copy behind.
void AppendBase64(std::string& out, ByteSpan data);
void AppendBase64Url(std::string& out, ByteSpan data);

Result<std::vector<uint8_t>> Base64Decode(std::string_view text);
Result<std::vector<uint8_t>> Base64UrlDecode(std::string_view text);

// Decodes straight into a SecureBuffer (for key material): no intermediate copy exists.
Result<crypto::SecureBuffer> Base64DecodeSecret(std::string_view text);

}  // namespace lazycrypt::keywrap

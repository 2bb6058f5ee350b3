// The CSPRNG (OpenSSL RAND_bytes, seeded by the OS).
#pragma once

#include <span>

#include "common/status.h"
#include "crypto/secure_buffer.h"

namespace lazycrypt::crypto {

Status RandomBytes(std::span<uint8_t> out);
Result<SecureBuffer> RandomKey(size_t size_bytes);

}  // namespace lazycrypt::crypto

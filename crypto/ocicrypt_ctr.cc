#include "crypto/ocicrypt_ctr.h"

#include <openssl/err.h>
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <string>
#include <vector>

#include "crypto/secure_buffer.h"

namespace lazycrypt::crypto {
namespace {

struct CipherCtxDeleter {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }  // cleanses key schedule
};
using CipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxDeleter>;

// Fetched once; immutable and shared by all threads.
const EVP_CIPHER* Aes256Ctr() {
  static EVP_CIPHER* cipher = EVP_CIPHER_fetch(nullptr, "AES-256-CTR", nullptr);
  return cipher;
}

constexpr size_t kMaxUpdate = size_t{1} << 30;  // EVP_CipherUpdate takes an int length
constexpr size_t kScratchSize = 64 * 1024;      // ciphertext staging for the encrypting stream

Status OpenSslFailure(const char* what) {
  unsigned long err = ERR_get_error();
  ERR_clear_error();
  return Status::Internal(std::string("AES-256-CTR: ") + what + " failed (OpenSSL error " +
                          std::to_string(err) + ")");
}

Status CheckKeyAndNonce(std::span<const uint8_t> key, std::span<const uint8_t> nonce) {
  if (key.size() != kCtrKeySize) {
    return Status::InvalidArgument("AES_256_CTR_HMAC_SHA256: key is " +
                                   std::to_string(key.size()) + " bytes, need 32");
  }
  if (nonce.size() != kCtrNonceSize) {
    return Status::InvalidArgument("AES_256_CTR_HMAC_SHA256: nonce is " +
                                   std::to_string(nonce.size()) + " bytes, need 16");
  }
  return Status::Ok();
}

// CTR is symmetric: encrypting and decrypting are the same XOR, so one direction serves both.
Result<CipherCtxPtr> NewCtrContext(std::span<const uint8_t> key,
                                   std::span<const uint8_t> counter_block) {
  const EVP_CIPHER* cipher = Aes256Ctr();
  if (cipher == nullptr) return OpenSslFailure("EVP_CIPHER_fetch(AES-256-CTR)");
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (!ctx) return OpenSslFailure("EVP_CIPHER_CTX_new");
  if (EVP_CipherInit_ex2(ctx.get(), cipher, key.data(), counter_block.data(), 1, nullptr) != 1) {
    return OpenSslFailure("EVP_CipherInit_ex2");
  }
  return ctx;
}

// in → out, same size, exact aliasing allowed.
Status Xor(EVP_CIPHER_CTX* ctx, const uint8_t* in, uint8_t* out, size_t size) {
  size_t done = 0;
  while (done < size) {
    size_t n = std::min(size - done, kMaxUpdate);
    int outl = 0;
    if (EVP_CipherUpdate(ctx, out + done, &outl, in + done, static_cast<int>(n)) != 1 ||
        static_cast<size_t>(outl) != n) {
      return OpenSslFailure("EVP_CipherUpdate");
    }
    done += n;
  }
  return Status::Ok();
}

class EncryptingStream final : public CtrHmacEncryptingStream {
 public:
  EncryptingStream(OutputStream& out, CipherCtxPtr ctx, std::span<const uint8_t> key)
      : out_(out), ctx_(std::move(ctx)), mac_(key), scratch_(kScratchSize) {}
  EncryptingStream(const EncryptingStream&) = delete;
  EncryptingStream& operator=(const EncryptingStream&) = delete;

  Status Write(ByteSpan data) override {
    if (!error_.ok()) return error_;
    if (closed_) return Status::FailedPrecondition("AES_256_CTR_HMAC_SHA256: write after close");
    while (!data.empty()) {
      size_t n = std::min(data.size(), scratch_.size());
      Status s = Xor(ctx_.get(), data.data(), scratch_.data(), n);
      ByteSpan piece(scratch_.data(), n);
      if (s.ok()) {
        mac_.Update(piece);
        s = out_.Write(piece);
      }
      if (!s.ok()) {
        error_ = s;  // the key stream and MAC are now out of step with `out`: refuse more
        return s;
      }
      bytes_written_ += n;
      data = data.subspan(n);
    }
    return Status::Ok();
  }

  Status Close() override {
    if (!error_.ok()) return error_;
    if (closed_) return Status::Ok();
    closed_ = true;
    hmac_ = mac_.Finish();
    return Status::Ok();
  }

  Result<Sha256Digest> hmac() const override {
    if (!error_.ok()) return error_;
    if (!closed_) {
      return Status::FailedPrecondition("AES_256_CTR_HMAC_SHA256: hmac() before Close()");
    }
    return hmac_;
  }

  uint64_t bytes_written() const override { return bytes_written_; }

 private:
  OutputStream& out_;
  CipherCtxPtr ctx_;
  HmacSha256 mac_;
  std::vector<uint8_t> scratch_;  // holds ciphertext only
  Status error_;
  bool closed_ = false;
  Sha256Digest hmac_{};
  uint64_t bytes_written_ = 0;
};

class DecryptingStream final : public InputStream {
 public:
  DecryptingStream(InputStream& in, CipherCtxPtr ctx, std::span<const uint8_t> key,
                   const Sha256Digest& expected)
      : in_(in), ctx_(std::move(ctx)), mac_(key), expected_(expected) {}
  DecryptingStream(const DecryptingStream&) = delete;
  DecryptingStream& operator=(const DecryptingStream&) = delete;

  Result<size_t> Read(MutableByteSpan out) override {
    if (!error_.ok()) return error_;
    if (verified_ || out.empty()) return size_t{0};
    LC_ASSIGN_OR_RETURN(size_t n, in_.Read(out));
    if (n == 0) {
      Sha256Digest actual = mac_.Finish();
      if (!ConstantTimeEquals(actual, expected_)) {
        error_ = Status::AuthFailed(
            "AES_256_CTR_HMAC_SHA256: HMAC mismatch after " + std::to_string(bytes_read_) +
            " bytes (layer altered or truncated, or wrong key)");
        return error_;
      }
      verified_ = true;
      return size_t{0};
    }
    if (n > out.size()) return Status::Internal("input stream returned more than asked");
    mac_.Update(out.first(n));  // MAC the ciphertext, then decrypt in place
    if (Status s = Xor(ctx_.get(), out.data(), out.data(), n); !s.ok()) {
      error_ = s;
      return s;
    }
    bytes_read_ += n;
    return n;
  }

 private:
  InputStream& in_;
  CipherCtxPtr ctx_;
  HmacSha256 mac_;
  Sha256Digest expected_;
  Status error_;
  bool verified_ = false;
  uint64_t bytes_read_ = 0;
};

}  // namespace

Result<std::unique_ptr<CtrHmacEncryptingStream>> NewCtrHmacEncryptingStream(
    OutputStream& out, std::span<const uint8_t> key, std::span<const uint8_t> nonce) {
  LC_RETURN_IF_ERROR(CheckKeyAndNonce(key, nonce));
  LC_ASSIGN_OR_RETURN(CipherCtxPtr ctx, NewCtrContext(key, nonce));
  return std::unique_ptr<CtrHmacEncryptingStream>(
      std::make_unique<EncryptingStream>(out, std::move(ctx), key));
}

Result<std::unique_ptr<InputStream>> NewCtrHmacDecryptingStream(
    InputStream& in, std::span<const uint8_t> key, std::span<const uint8_t> nonce,
    std::span<const uint8_t> expected_hmac) {
  LC_RETURN_IF_ERROR(CheckKeyAndNonce(key, nonce));
  if (expected_hmac.size() != kCtrHmacSize) {
    return Status::InvalidArgument("AES_256_CTR_HMAC_SHA256: expected HMAC is " +
                                   std::to_string(expected_hmac.size()) +
                                   " bytes, need 32 (pubopts \"hmac\" missing?)");
  }
  Sha256Digest expected;
  std::copy(expected_hmac.begin(), expected_hmac.end(), expected.begin());
  LC_ASSIGN_OR_RETURN(CipherCtxPtr ctx, NewCtrContext(key, nonce));
  return std::unique_ptr<InputStream>(
      std::make_unique<DecryptingStream>(in, std::move(ctx), key, expected));
}

Status AesCtrXorAt(std::span<const uint8_t> key, std::span<const uint8_t> nonce, uint64_t offset,
                   std::span<const uint8_t> in, std::span<uint8_t> out) {
  LC_RETURN_IF_ERROR(CheckKeyAndNonce(key, nonce));
  if (in.size() != out.size()) {
    return Status::InvalidArgument("AES-256-CTR: output is " + std::to_string(out.size()) +
                                   " bytes for " + std::to_string(in.size()) + " bytes of input");
  }
  if (!in.empty() && in.data() != out.data()) {
    auto a = reinterpret_cast<uintptr_t>(in.data());
    auto b = reinterpret_cast<uintptr_t>(out.data());
    if (a < b + out.size() && b < a + in.size()) {
      return Status::InvalidArgument("AES-256-CTR: output partially overlaps input");
    }
  }
  // Counter block for block number offset/16: nonce + offset/16 as 128-bit big-endian, mod 2^128.
  std::array<uint8_t, kCtrNonceSize> counter;
  std::copy(nonce.begin(), nonce.end(), counter.begin());
  uint64_t add = offset / 16;
  unsigned carry = 0;
  for (size_t i = counter.size(); i-- > 0;) {
    unsigned sum = counter[i] + static_cast<unsigned>(add & 0xff) + carry;
    counter[i] = static_cast<uint8_t>(sum);
    carry = sum >> 8;
    add >>= 8;
  }
  LC_ASSIGN_OR_RETURN(CipherCtxPtr ctx, NewCtrContext(key, counter));
  // Skip the key-stream bytes of the first block that precede `offset`.
  if (size_t skip = offset % 16; skip != 0) {
    uint8_t discard[16] = {};
    LC_RETURN_IF_ERROR(Xor(ctx.get(), discard, discard, skip));
  }
  if (in.empty()) return Status::Ok();
  return Xor(ctx.get(), in.data(), out.data(), in.size());
}

}  // namespace lazycrypt::crypto

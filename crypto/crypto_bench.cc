// Throughput of the hot-path primitives, to compare with
//   openssl speed -evp aes-256-gcm -bytes 1048576 -seconds 2
// Run: build-<you>/bin/crypto_bench [--benchmark_filter=AesGcmOpen]
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <vector>

#include "common/io.h"
#include "crypto/aes_gcm.h"
#include "crypto/digest.h"
#include "crypto/ocicrypt_ctr.h"

namespace lazycrypt::crypto {
namespace {

std::vector<uint8_t> Filled(size_t n, uint8_t v) { return std::vector<uint8_t>(n, v); }

AesGcm BenchGcm() {
  auto gcm = AesGcm::Create(Filled(kAes256KeySize, 0x42));
  if (!gcm.ok()) std::abort();
  return std::move(gcm).value();
}

// Authenticate + decrypt one block per iteration (what ChunkOpener does per chunk).
void BM_AesGcmOpen(benchmark::State& state) {
  const size_t size = static_cast<size_t>(state.range(0));
  AesGcm gcm = BenchGcm();
  auto nonce = Filled(kGcmNonceSize, 1), aad = Filled(32, 2), tag = Filled(kGcmTagSize, 0);
  auto ct = Filled(size, 3), pt = Filled(size, 0);
  if (!gcm.Seal(nonce, aad, ct, ct, tag).ok()) std::abort();
  for (auto _ : state) {
    if (!gcm.Open(nonce, aad, ct, tag, pt).ok()) {
      state.SkipWithError("Open failed");
      break;
    }
    benchmark::DoNotOptimize(pt.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(size));
}
BENCHMARK(BM_AesGcmOpen)->Arg(16 << 10)->Arg(64 << 10)->Arg(256 << 10)->Arg(1 << 20)->Arg(4 << 20);

void BM_AesGcmSealInPlace(benchmark::State& state) {
  const size_t size = static_cast<size_t>(state.range(0));
  AesGcm gcm = BenchGcm();
  auto nonce = Filled(kGcmNonceSize, 1), tag = Filled(kGcmTagSize, 0), buf = Filled(size, 3);
  for (auto _ : state) {
    if (!gcm.Seal(nonce, {}, buf, buf, tag).ok()) {
      state.SkipWithError("Seal failed");
      break;
    }
    benchmark::DoNotOptimize(buf.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(size));
}
BENCHMARK(BM_AesGcmSealInPlace)->Arg(64 << 10)->Arg(1 << 20);

void BM_Sha256(benchmark::State& state) {
  auto data = Filled(static_cast<size_t>(state.range(0)), 5);
  for (auto _ : state) benchmark::DoNotOptimize(Sha256::Of(data));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}
BENCHMARK(BM_Sha256)->Arg(1 << 20);

// ocicrypt CTR+HMAC decryption of a 16 MiB layer read in 256 KiB pieces.
void BM_CtrHmacDecrypt(benchmark::State& state) {
  auto key = Filled(kCtrKeySize, 7), nonce = Filled(kCtrNonceSize, 8);
  auto plain = Filled(16 << 20, 9);
  MemoryOutputStream sink;
  auto enc = NewCtrHmacEncryptingStream(sink, key, nonce);
  if (!enc.ok() || !(*enc)->Write(plain).ok() || !(*enc)->Close().ok()) std::abort();
  Sha256Digest mac = *(*enc)->hmac();
  std::vector<uint8_t> buf(256 << 10);
  for (auto _ : state) {
    MemoryInputStream in(sink.bytes());
    auto dec = NewCtrHmacDecryptingStream(in, key, nonce, mac);
    if (!dec.ok()) std::abort();
    for (;;) {
      auto n = (*dec)->Read(buf);
      if (!n.ok()) {
        state.SkipWithError("HMAC mismatch");
        break;
      }
      if (*n == 0) break;
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(plain.size()));
}
BENCHMARK(BM_CtrHmacDecrypt);

}  // namespace
}  // namespace lazycrypt::crypto

BENCHMARK_MAIN();

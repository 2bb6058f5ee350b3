// SecureBuffer: contents, moves, and — observed through a replaced global operator delete — that
// key bytes are wiped before their heap block is returned to the allocator.
#include "crypto/secure_buffer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

namespace {

// Test-only allocation observer: when the watched block is freed, record its bytes first.
void* g_watched = nullptr;
size_t g_watched_size = 0;
bool g_watched_freed = false;
unsigned char g_seen[64];

void ObserveFree(void* p) {
  if (p != nullptr && p == g_watched) {
    std::memcpy(g_seen, p, g_watched_size);
    g_watched_freed = true;
    g_watched = nullptr;
  }
}

void Watch(void* p, size_t n) {
  ASSERT_LE(n, sizeof(g_seen));
  g_watched = p;
  g_watched_size = n;
  g_watched_freed = false;
  std::memset(g_seen, 0xcc, sizeof(g_seen));
}

bool SeenAllZero() {
  return std::all_of(g_seen, g_seen + g_watched_size, [](unsigned char b) { return b == 0; });
}

}  // namespace

// Replacing the global allocation functions is permitted by the standard ([replacement.functions]);
// every vector<uint8_t> block goes through these.
void* operator new(size_t n) {
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  ObserveFree(p);
  std::free(p);
}
void operator delete(void* p, size_t) noexcept {
  ObserveFree(p);
  std::free(p);
}

namespace lazycrypt::crypto {
namespace {

const std::vector<uint8_t> kSecret(32, 0xa5);

TEST(SecureBuffer, ConstructsCopiesAndClones) {
  SecureBuffer zero(16);
  EXPECT_EQ(zero.size(), 16u);
  EXPECT_TRUE(std::all_of(zero.data(), zero.data() + 16, [](uint8_t b) { return b == 0; }));
  SecureBuffer a(kSecret);
  ASSERT_EQ(a.size(), kSecret.size());
  EXPECT_TRUE(std::equal(kSecret.begin(), kSecret.end(), a.data()));
  SecureBuffer b = a.Clone();
  EXPECT_NE(a.data(), b.data());
  EXPECT_TRUE(ConstantTimeEquals(a.span(), b.span()));
  EXPECT_TRUE(SecureBuffer().empty());
}

TEST(SecureBuffer, DestructionWipesBeforeFree) {
  {
    SecureBuffer key(kSecret);
    Watch(key.data(), key.size());
  }
  ASSERT_TRUE(g_watched_freed);
  EXPECT_TRUE(SeenAllZero()) << "key bytes reached the allocator unwiped";
}

TEST(SecureBuffer, MoveLeavesNoCopyAndSourceEmpty) {
  SecureBuffer source(kSecret);
  const uint8_t* block = source.data();
  Watch(source.data(), source.size());
  SecureBuffer moved(std::move(source));
  EXPECT_TRUE(source.empty());     // NOLINT(bugprone-use-after-move): checking the contract
  EXPECT_EQ(moved.data(), block);  // the block moved: no second copy of the key exists
  EXPECT_FALSE(g_watched_freed);
  EXPECT_TRUE(std::equal(kSecret.begin(), kSecret.end(), moved.data()));

  SecureBuffer assigned;
  assigned = std::move(moved);
  EXPECT_TRUE(moved.empty());  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(assigned.data(), block);
  EXPECT_FALSE(g_watched_freed);
  assigned.Wipe();
  EXPECT_TRUE(assigned.empty());
  ASSERT_TRUE(g_watched_freed);
  EXPECT_TRUE(SeenAllZero());
}

TEST(SecureBuffer, MoveAssignWipesTheOverwrittenKey) {
  SecureBuffer old_key(kSecret);
  Watch(old_key.data(), old_key.size());
  old_key = SecureBuffer(std::vector<uint8_t>(32, 0x11));
  ASSERT_TRUE(g_watched_freed);
  EXPECT_TRUE(SeenAllZero());
  EXPECT_EQ(old_key.size(), 32u);
  EXPECT_EQ(old_key.data()[0], 0x11);
}

}  // namespace
}  // namespace lazycrypt::crypto

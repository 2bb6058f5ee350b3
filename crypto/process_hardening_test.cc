// HardenProcess, in a child process (it changes the whole process): non-dumpable, no core size,
// OpenSSL's secure heap in place.
#include "crypto/process_hardening.h"

#include <gtest/gtest.h>
#include <openssl/crypto.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

namespace lazycrypt::crypto {
namespace {

TEST(HardenProcess, MakesTheProcessNonDumpableWithoutCoreAndWithSecureHeap) {
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (prctl(PR_GET_DUMPABLE) != 1) _exit(10);  // the starting point the test assumes
    HardenProcess("process_hardening_test");
    if (prctl(PR_GET_DUMPABLE) != 0) _exit(11);
    struct rlimit core {};
    if (getrlimit(RLIMIT_CORE, &core) != 0 || core.rlim_cur != 0) _exit(12);
    if (CRYPTO_secure_malloc_initialized() != 1) _exit(13);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << "10: started non-dumpable, 11: still dumpable, 12: core limit, 13: no secure heap";
}

}  // namespace
}  // namespace lazycrypt::crypto

// Process-wide hygiene for programs that hold keys or plaintext (lazycrypt-snapshotter, lazycrypt,
// lazycrypt-decoder): called once, first thing in main().
#pragma once

namespace lazycrypt::crypto {

// Makes the process non-dumpable (prctl(PR_SET_DUMPABLE, 0): no core dump, no ptrace or
// /proc/<pid>/mem access by other non-root users; /proc/<pid> becomes root-owned), sets the core
// size limit to 0 (for kernels configured with suid_dumpable = 2), and gives OpenSSL a locked,
// never-dumped secure heap, where it keeps the private parts of loaded RSA/EC keys. Never fails:
// what cannot be done is reported as one line on stderr (a key must never be refused because the
// memory lock limit is low). REQUIRES: called before any other thread exists.
void HardenProcess(const char* program_name);

}  // namespace lazycrypt::crypto

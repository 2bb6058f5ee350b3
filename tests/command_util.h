// Running commands from integration tests through the harness (tests linking lc_testharness):
// failure messages with the whole output, and a run that must succeed. Header-only; tests only.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "tests/harness/subprocess.h"
#include "tests/test_util.h"

namespace lazycrypt::testing {

// "exit N", then stdout and stderr: for failure messages.
inline std::string Describe(const harness::CommandResult& r) {
  return "exit " + std::to_string(r.exit_code) + "\nstdout:\n" + r.stdout_text + "\nstderr:\n" +
         r.stderr_text;
}

// Runs argv (no shell), failing the test (with the output) unless it exits 0.
inline harness::CommandResult MustRun(const std::vector<std::string>& argv,
                                      std::chrono::milliseconds timeout = std::chrono::seconds(120)) {
  auto r = harness::RunCommand(argv, timeout);
  EXPECT_TRUE(r.ok()) << argv[0] << ": " << r.status().ToString();
  if (!r.ok()) return {};
  EXPECT_EQ(r->exit_code, 0) << argv[0] << " failed: " << Describe(*r);
  return *r;
}

}  // namespace lazycrypt::testing

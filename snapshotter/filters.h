// containerd's filter syntax (containerd/filters) for List/Walk, over snapshot fields as
// containerd's snapshots/storage adapts them: `name`, `parent`, `kind` ("active", "view",
// "committed") and `labels.<key>` (a key with dots or slashes is quoted:
// labels."containerd.io/snapshot.ref").
//
//   filter   := selector ("," selector)*        all selectors must match
//   selector := fieldpath [op value]            without op: the field is present
//   op       := "==" | "!=" | "~="              ~= is a regular-expression search
//   value    := "quoted" | /quoted/ | bare       bare: up to ',' or whitespace
//
// A list of filters matches when ANY of them matches; an empty list (or empty strings) matches
// everything. Thread-safe after construction.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "snapshotter/types.h"

namespace lazycrypt::snapshotter {

class SnapshotFilter {
 public:
  // InvalidArgument naming the filter and the position of the problem.
  static Result<SnapshotFilter> Parse(const std::vector<std::string>& filters);
  bool Match(const SnapshotInfo& info) const;

  struct Selector;
  SnapshotFilter(SnapshotFilter&&) noexcept;
  SnapshotFilter& operator=(SnapshotFilter&&) noexcept;
  ~SnapshotFilter();

 private:
  SnapshotFilter();
  // Outer: OR; inner: AND. Empty outer = match everything.
  std::vector<std::vector<Selector>> any_of_;
};

}  // namespace lazycrypt::snapshotter

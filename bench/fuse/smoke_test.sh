#!/usr/bin/env bash
# bench/fuse/smoke_test.sh NOOPFS_BIN TTFB_BIN — ctest bench.fuse_smoke.
# Mounts lazycrypt-bench-noopfs in a temp dir with a 4 MiB file (plus an odd-sized and an empty
# one), checks the listing and sizes, compares the served bytes (whole files and unaligned ranges)
# with `--dump NAME`, checks the mount refuses writes, runs the time-to-first-byte timer on it
# (it reports each file, and fails on a file with no first byte), and unmounts; then the same in
# passthrough mode (--backing-dir), compared with the backing files. Asserts content, never timing.
# Exit 77 (ctest: skipped) only when /dev/fuse or fusermount3 is absent.
set -euo pipefail

BIN=${1:?usage: smoke_test.sh NOOPFS_BIN TTFB_BIN}
TTFB_BIN=${2:?usage: smoke_test.sh NOOPFS_BIN TTFB_BIN}
fail() { echo "FAIL: $*" >&2; exit 1; }

[ -c /dev/fuse ] || { echo "SKIP: /dev/fuse is absent" >&2; exit 77; }
command -v fusermount3 >/dev/null 2>&1 || { echo "SKIP: fusermount3 is not installed" >&2; exit 77; }

DIR=$(mktemp -d "${TMPDIR:-/tmp}/noopfs-smoke-XXXXXX")
DIR=$(realpath "$DIR")
PID=""
# Mounted? Asked of /proc/self/mountinfo, never of the mount (a stuck daemon would hang stat()).
is_mounted() { awk -v m="$1" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo; }
cleanup() {
  # The daemon dies first (its death aborts the connection), then a lazy unmount cannot block.
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill "$PID" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  if is_mounted "$DIR/mnt"; then umount -l "$DIR/mnt" 2>/dev/null || fusermount3 -uz "$DIR/mnt" 2>/dev/null || true; fi
  is_mounted "$DIR/mnt" || rm -rf "$DIR"
}
trap cleanup EXIT
mkdir "$DIR/mnt"

FILES=(--file big:4M --file odd:1000003 --file empty:0)

# ---- Argument errors are refused ---------------------------------------------------------------
"$BIN" --file noseparator --dump noseparator >/dev/null 2>&1 && fail "accepted --file without :SIZE"
"$BIN" --file a/b:10 --dump a/b >/dev/null 2>&1 && fail "accepted a name with '/'"
"$BIN" --file x:12Q --dump x >/dev/null 2>&1 && fail "accepted size 12Q"
"$BIN" --file x:1 --file x:2 --dump x >/dev/null 2>&1 && fail "accepted a duplicate name"
"$BIN" "${FILES[@]}" --dump missing >/dev/null 2>&1 && fail "--dump of an unknown name succeeded"

# ---- The generator ------------------------------------------------------------------------------
"$BIN" "${FILES[@]}" --dump big >"$DIR/big.expected"
"$BIN" "${FILES[@]}" --dump odd >"$DIR/odd.expected"
[ "$(stat -c %s "$DIR/big.expected")" = 4194304 ] || fail "--dump big is not 4 MiB"
[ "$(stat -c %s "$DIR/odd.expected")" = 1000003 ] || fail "--dump odd is not 1000003 bytes"
# The dump depends on the name only, not on the order or the other files.
"$BIN" --file odd:1000003 --dump odd | cmp -s - "$DIR/odd.expected" || fail "--dump depends on other files"
# Files differ from each other and the bytes are not trivially constant.
cmp -s <(head -c 65536 "$DIR/big.expected") <(head -c 65536 "$DIR/odd.expected") && fail "big and odd start alike"
distinct=$(head -c 65536 "$DIR/big.expected" | od -An -v -tu1 -w1 | sort -u | wc -l)
[ "$distinct" -ge 250 ] || fail "the pattern has only $distinct distinct byte values in 64 KiB"

# ---- Mount ----------------------------------------------------------------------------------------
"$BIN" -f "${FILES[@]}" "$DIR/mnt" 2>"$DIR/noopfs.log" &
PID=$!
for _ in $(seq 1 100); do
  is_mounted "$DIR/mnt" && break
  kill -0 "$PID" 2>/dev/null || { cat "$DIR/noopfs.log" >&2; fail "noopfs exited before mounting"; }
  sleep 0.1
done
is_mounted "$DIR/mnt" || fail "noopfs did not mount within 10 s"

listing=$(ls -A "$DIR/mnt" | sort | tr '\n' ' ')
[ "$listing" = "big empty odd " ] || fail "listing is '$listing'"
[ "$(stat -c %s "$DIR/mnt/big")" = 4194304 ] || fail "big has the wrong size"
[ "$(stat -c %s "$DIR/mnt/odd")" = 1000003 ] || fail "odd has the wrong size"
[ "$(stat -c %s "$DIR/mnt/empty")" = 0 ] || fail "empty has the wrong size"
[ "$(stat -c %F "$DIR/mnt/big")" = "regular file" ] || fail "big is not a regular file"
[ ! -e "$DIR/mnt/nonexistent" ] || fail "a name that was not given exists"

cmp "$DIR/mnt/big" "$DIR/big.expected" || fail "big differs from --dump big"
cmp "$DIR/mnt/odd" "$DIR/odd.expected" || fail "odd differs from --dump odd"
[ "$(wc -c <"$DIR/mnt/empty")" = 0 ] || fail "empty is not empty"

# Unaligned ranges, one crossing a 1 MiB request boundary, one running past the end of the file.
range() { dd if="$1" iflag=skip_bytes,count_bytes skip="$2" count="$3" bs=65536 status=none; }
cmp <(range "$DIR/mnt/big" 1048573 300001) <(range "$DIR/big.expected" 1048573 300001) || fail "unaligned range of big differs"
cmp <(range "$DIR/mnt/odd" 999000 5000) <(range "$DIR/odd.expected" 999000 5000) || fail "tail of odd differs"
[ "$(range "$DIR/mnt/odd" 999000 5000 | wc -c)" = 1003 ] || fail "a read past the end of odd is not short"

# Read-only.
( echo x >"$DIR/mnt/big" ) 2>/dev/null && fail "writing to big succeeded"
touch "$DIR/mnt/new" 2>/dev/null && fail "creating a file succeeded"
cmp "$DIR/mnt/big" "$DIR/big.expected" || fail "big changed after a refused write"

# The time-to-first-byte timer: one "<ns> <path>" line per file, in order; no byte is a failure.
ttfb_out=$("$TTFB_BIN" "$DIR/mnt/big" "$DIR/mnt/odd") || fail "ttfb failed on the mount"
[ "$(echo "$ttfb_out" | wc -l)" = 2 ] || fail "ttfb printed '$ttfb_out'"
echo "$ttfb_out" | awk -v a="$DIR/mnt/big" -v b="$DIR/mnt/odd" \
  'NR == 1 && ($1 !~ /^[0-9]+$/ || $1 == 0 || $2 != a) { exit 1 } NR == 2 && ($1 !~ /^[0-9]+$/ || $2 != b) { exit 1 }' ||
  fail "ttfb output is malformed: '$ttfb_out'"
"$TTFB_BIN" "$DIR/mnt/empty" >/dev/null 2>&1 && fail "ttfb succeeded on an empty file"
"$TTFB_BIN" "$DIR/mnt/nonexistent" >/dev/null 2>&1 && fail "ttfb succeeded on a missing file"

# ---- Unmount ----------------------------------------------------------------------------------
fusermount3 -u "$DIR/mnt" || fail "fusermount3 -u failed"
rc=0
wait "$PID" || rc=$?
PID=""
[ "$rc" = 0 ] || { cat "$DIR/noopfs.log" >&2; fail "noopfs exited with $rc after unmount"; }
is_mounted "$DIR/mnt" && fail "still mounted after unmount"

# ---- Passthrough mode (--backing-dir): the same tree, bytes forwarded from the backing files ------
mkdir "$DIR/backing"
cp "$DIR/big.expected" "$DIR/backing/big"
head -c 1000003 /dev/urandom >"$DIR/backing/odd"
: >"$DIR/backing/empty"
"$BIN" "${FILES[@]}" --backing-dir "$DIR/nonexistent" "$DIR/mnt" >/dev/null 2>&1 &&
  fail "accepted a missing --backing-dir"
"$BIN" --file big:5M --backing-dir "$DIR/backing" "$DIR/mnt" >/dev/null 2>&1 &&
  fail "accepted a backing file whose size differs from the spec"
"$BIN" -f --clone-fd "${FILES[@]}" --backing-dir "$DIR/backing" "$DIR/mnt" 2>"$DIR/passthrough.log" &
PID=$!
for _ in $(seq 1 100); do
  is_mounted "$DIR/mnt" && break
  kill -0 "$PID" 2>/dev/null || { cat "$DIR/passthrough.log" >&2; fail "passthrough exited before mounting"; }
  sleep 0.1
done
is_mounted "$DIR/mnt" || fail "passthrough did not mount within 10 s"
cmp "$DIR/mnt/big" "$DIR/backing/big" || fail "passthrough big differs from its backing file"
cmp "$DIR/mnt/odd" "$DIR/backing/odd" || fail "passthrough odd differs from its backing file"
cmp <(range "$DIR/mnt/odd" 999000 5000) <(range "$DIR/backing/odd" 999000 5000) || fail "passthrough tail of odd differs"
[ "$(wc -c <"$DIR/mnt/empty")" = 0 ] || fail "passthrough empty is not empty"
( echo x >"$DIR/mnt/big" ) 2>/dev/null && fail "writing through the passthrough succeeded"
fusermount3 -u "$DIR/mnt" || fail "fusermount3 -u (passthrough) failed"
rc=0
wait "$PID" || rc=$?
PID=""
[ "$rc" = 0 ] || { cat "$DIR/passthrough.log" >&2; fail "passthrough exited with $rc after unmount"; }
echo "bench.fuse_smoke: OK"

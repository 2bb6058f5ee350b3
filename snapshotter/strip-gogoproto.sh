#!/bin/sh
# strip-gogoproto.sh IN OUT: copies one of containerd's API protos without gogoproto, which protoc's
# C++ generator cannot use: drops `import weak "gogoproto/gogo.proto";`, `option (gogoproto.x) = y;`
# lines, and every `(gogoproto.x) = y` inside `[...]` field/enum-value options (removing the
# brackets when nothing else is left in them). Package names and everything else stay.
set -eu
in="$1"
out="$2"
mkdir -p "$(dirname "$out")"
sed -E \
  -e '/^[[:space:]]*import[[:space:]]+weak[[:space:]]+"gogoproto\/gogo\.proto";/d' \
  -e '/^[[:space:]]*option[[:space:]]+\(gogoproto\.[A-Za-z_]+\)[[:space:]]*=.*;/d' \
  -e ':a' \
  -e 's/\(gogoproto\.[A-Za-z_]+\)[[:space:]]*=[[:space:]]*("[^"]*"|[A-Za-z0-9_.]+)[[:space:]]*,?[[:space:]]*//' \
  -e 'ta' \
  -e 's/,[[:space:]]*\]/]/g' \
  -e 's/[[:space:]]*\[[[:space:]]*\]//g' \
  "$in" > "$out.tmp"
if grep -q gogoproto "$out.tmp"; then
  echo "strip-gogoproto.sh: gogoproto left in $out:" >&2
  grep -n gogoproto "$out.tmp" >&2
  rm -f "$out.tmp"
  exit 1
fi
mv "$out.tmp" "$out"

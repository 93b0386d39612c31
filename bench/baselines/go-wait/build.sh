#!/usr/bin/env bash
# Build the Go baseline (go-wait) and print the binary's path on stdout.
#
# Output: ${CUSTOMTASK_SDK_CACHE:-$HOME/.cache/customtask-sdk}/bench/go-wait
# The build is skipped when the binary exists and a hash of this module's sources
# (go.mod, go.sum, *.go) and of the Go version matches the one stored beside it.
# Set FORCE=1 to rebuild anyway. Progress goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out_dir="${CUSTOMTASK_SDK_CACHE:-${HOME}/.cache/customtask-sdk}/bench"
bin="${out_dir}/go-wait"
stamp="${bin}.sha256"

command -v go >/dev/null || { echo "build.sh: go is not on PATH" >&2; exit 1; }

hash="$(
  cd "$here"
  { go version; for f in go.mod go.sum $(ls *.go | LC_ALL=C sort); do echo "== $f"; cat "$f"; done; } \
    | sha256sum | cut -d' ' -f1
)"

if [[ "${FORCE:-}" != 1 && -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$hash" ]]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$out_dir"
echo "build.sh: building go-wait (a few minutes on a cold build cache)..." >&2
started=$SECONDS
tmp="${bin}.tmp.$$"
trap 'rm -f "$tmp"' EXIT
(cd "$here" && CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags='-s -w' -o "$tmp" .)
mv -f "$tmp" "$bin"
echo "$hash" >"$stamp"
echo "build.sh: built in $((SECONDS - started))s" >&2
echo "$bin"

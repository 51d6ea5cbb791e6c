#!/usr/bin/env bash
# Build the ig-otel collector once per machine with the OpenTelemetry
# Collector Builder (OCB), from collector/builder-config.yaml.
#
# The binary lands in a cache outside the repository:
#   ${IG_OTEL_CACHE:-$HOME/.cache/ig-otel}/otelcol-<version>/otelcol-ig
# and the script does nothing when it is already there. The last line of
# stdout is the path of the binary, so callers can do
#   IG_OTEL_OTELCOL="$(collector/build.sh | tail -n 1)"
#
# Needs Go (>= the builder's go directive) and access to the Go module proxy.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
manifest="$here/builder-config.yaml"

# The version is read from the manifest so that one edit bumps everything.
version="$(sed -n 's/^  version: *\([0-9][0-9.]*\) *$/\1/p' "$manifest" | head -n 1)"
if [[ -z "$version" ]]; then
  echo "build.sh: cannot read dist.version from $manifest" >&2
  exit 1
fi

cache="${IG_OTEL_CACHE:-$HOME/.cache/ig-otel}"
dest="$cache/otelcol-$version"
binary="$dest/otelcol-ig"

if [[ -x "$binary" ]] && [[ "$(cat "$dest/manifest.sha256" 2>/dev/null)" \
    == "$(sha256sum "$manifest" | cut -d' ' -f1)" ]]; then
  echo "build.sh: $binary is up to date" >&2
  echo "$binary"
  exit 0
fi

go_bin="$(command -v go || true)"
if [[ -z "$go_bin" && -x /usr/local/go/bin/go ]]; then
  go_bin=/usr/local/go/bin/go
fi
if [[ -z "$go_bin" ]]; then
  echo "build.sh: the go toolchain is required (put it on PATH)" >&2
  exit 1
fi
export PATH="$(dirname "$go_bin"):$PATH"

# OCB itself is installed into the cache at the same version as the manifest.
builder="$cache/bin/builder-$version"
if [[ ! -x "$builder" ]]; then
  echo "build.sh: installing OCB v$version" >&2
  mkdir -p "$cache/bin"
  tmp_bin="$(mktemp -d "$cache/bin/.install.XXXXXX")"
  GOBIN="$tmp_bin" go install \
    "go.opentelemetry.io/collector/cmd/builder@v$version"
  mv "$tmp_bin/builder" "$builder"
  rmdir "$tmp_bin"
fi

# Build in a scratch directory so a failed build never leaves a half binary
# where the fast path above would trust it.
work="$(mktemp -d "$cache/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "build.sh: building otelcol-ig $version (cold builds take minutes)" >&2
# OCB leaves scratch folders in TMPDIR; keep them inside the work directory.
(cd "$work" && TMPDIR="$work" "$builder" --config "$manifest" >&2)

mkdir -p "$dest"
mv "$work/_build/otelcol-ig" "$binary.tmp"
mv "$binary.tmp" "$binary"
sha256sum "$manifest" | cut -d' ' -f1 > "$dest/manifest.sha256"
"$binary" --version >&2
echo "$binary"

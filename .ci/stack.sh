#!/usr/bin/env bash
# Prepare a fresh Debian machine for tests/stack/: Debian's Prometheus
# (prometheus + promtool) and the ig-otel collector built with OCB.
#
# Source it from .ci/run to get IG_OTEL_OTELCOL exported:
#   source .ci/stack.sh
# or run it and evaluate what it prints:
#   eval "$(.ci/stack.sh)"
#
# Idempotent: installed packages and a cached collector build are reused.
# Any failure is fatal, because CI must not quietly skip the real stack.

_ig_otel_stack_prepare() (
  set -euo pipefail
  exec 3>&1 1>&2   # progress to stderr; only the binary path goes to fd 3

  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

  as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then "$@"; else sudo "$@"; fi
  }

  if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    echo "stack.sh: installing Debian's prometheus (prometheus, promtool)"
    export DEBIAN_FRONTEND=noninteractive
    if ! as_root apt-get install -y --no-install-recommends prometheus; then
      as_root apt-get update
      as_root apt-get install -y --no-install-recommends prometheus
    fi
    # Tests start their own Prometheus on free ports; the packaged service
    # would only hold port 9090 and disk.
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
      as_root systemctl disable --now prometheus || true
    fi
  fi
  promtool --version | head -n 1
  prometheus --version 2>&1 | head -n 1

  if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
    export PATH="/usr/local/go/bin:$PATH"
  fi
  if ! command -v go >/dev/null; then
    echo "stack.sh: no Go toolchain (expected go on PATH or /usr/local/go/bin/go)"
    exit 1
  fi
  go version

  binary="$("$repo/collector/build.sh" | tail -n 1)"
  if [[ ! -x "$binary" ]]; then
    echo "stack.sh: collector/build.sh did not produce a binary ($binary)"
    exit 1
  fi
  "$binary" validate --config="$repo/collector/config.yaml"
  echo "$binary" >&3
)

if _ig_otel_collector="$(_ig_otel_stack_prepare)" && [[ -n "$_ig_otel_collector" ]]
then
  export IG_OTEL_OTELCOL="$_ig_otel_collector"
  unset _ig_otel_collector
  if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    printf 'export IG_OTEL_OTELCOL=%q\n' "$IG_OTEL_OTELCOL"
  fi
else
  echo "stack.sh: preparing the observability stack failed" >&2
  unset _ig_otel_collector
  # shellcheck disable=SC2317
  return 1 2>/dev/null || exit 1
fi

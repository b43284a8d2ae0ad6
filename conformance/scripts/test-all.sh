#!/usr/bin/env bash
# Runs every check and test of the project, as CI does: installs what the tests need,
# then rustfmt, clippy (warnings are errors), the debug binaries the conformance suite
# executes, and the whole test suite, root-only namespace and runtime tests included.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" -ne 0 ]; then
    echo "test-all.sh: the conformance tests create network namespaces and need root; run it as root" >&2
    exit 1
fi

# rustup installs cargo under ~/.cargo/bin, which a bare CI shell may not have on PATH.
if [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; fi

step() { printf '\n==> %s\n' "$*"; }

step "installing test dependencies"
conformance/scripts/install-test-deps.sh
conformance/scripts/install-routing-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "building the binaries the conformance suite runs"
cargo build --workspace --bins

step "cargo test (unit, namespace, runtime and interop tests)"
cargo test --workspace --no-fail-fast

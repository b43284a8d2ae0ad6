#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine, as root: installs what the lab needs
# (install-test-deps.sh: iproute2, ping, etcd-server, ...), builds fjord, fjord-ipam,
# fjord-routed and fjord-lab (release), and runs `fjord-lab up` with the arguments
# given, e.g.:
#
#   conformance/scripts/lab.sh                          # 3 nodes, 2 pods each
#   conformance/scripts/lab.sh --nodes 20 --pods-per-node 10
#
# The lab stays up when this script returns; `target/release/fjord-lab status`, `exec`
# and `down` work on it (docs/lab.md). Nothing is created in the root namespace.
set -euo pipefail
cd "$(dirname "$0")/../.."

die() { echo "lab.sh: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (the lab creates network namespaces)"
# rustup installs cargo under ~/.cargo/bin, which a bare root shell may not have on PATH.
if [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; fi
command -v cargo >/dev/null 2>&1 ||
    die "cargo not found: install Rust 1.85 or newer (https://rustup.rs), then run this again"

echo "==> installing the lab's dependencies"
conformance/scripts/install-test-deps.sh
echo "==> building fjord, fjord-ipam, fjord-routed, fjord-lab (release)"
cargo build --release --quiet --bins -p fjord-cni -p fjord-ipam -p fjord-routed -p fjord-conformance
echo "==> target/release/fjord-lab up $*"
exec target/release/fjord-lab up "$@"

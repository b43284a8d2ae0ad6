#!/usr/bin/env bash
# Builds fjord, fjord-ipam and fjord-routed as static executables (glibc, crt-static) and
# proves they are static: `file` must say "statically linked" (or "static-pie linked") and
# `ldd` must find no dynamic section. The Containerfile runs the same build; this script
# checks it on a machine without a container engine. Unlike the Containerfile's build
# stage, it uses the host's toolchain and packages: the etcd client's build script needs
# protoc and the protobuf well-known types (Debian: protobuf-compiler libprotobuf-dev).
# conformance/tests/image.rs builds the image itself from a clean builder.
#
#   deploy/build-static.sh [OUT_DIR]    # copies the three binaries to OUT_DIR if given
#
# `--target` keeps RUSTFLAGS off build scripts and proc macros, which must stay dynamic
# host programs; only the shipped binaries are linked statically.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-gnu
BINARIES=(fjord fjord-ipam fjord-routed)

for cmd in cargo file ldd protoc; do
    command -v "$cmd" >/dev/null 2>&1 || {
        echo "build-static.sh: $cmd is not on PATH (Debian: apt-get install file libc-bin protobuf-compiler libprotobuf-dev)" >&2
        exit 1
    }
done

RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target "$TARGET" \
    -p fjord-cni -p fjord-ipam -p fjord-routed --bins

failed=0
for bin in "${BINARIES[@]}"; do
    path="target/$TARGET/release/$bin"
    kind=$(file -b "$path")
    # ldd exits non-zero on a static executable; its message is what we check.
    linked=$(ldd "$path" 2>&1 || true)
    size=$(stat -c %s "$path")
    if [[ "$kind" =~ (statically|static-pie)\ linked ]] && [[ "$linked" == *"not a dynamic executable"* || "$linked" == *"statically linked"* ]]; then
        printf 'static  %-13s %9d bytes  %s\n' "$bin" "$size" "$kind"
    else
        printf 'DYNAMIC %-13s %s | ldd: %s\n' "$bin" "$kind" "$linked" >&2
        failed=1
    fi
done
[ "$failed" -eq 0 ] || { echo "build-static.sh: some binaries are not static" >&2; exit 1; }

if [ "$#" -gt 0 ]; then
    mkdir -p "$1"
    for bin in "${BINARIES[@]}"; do cp "target/$TARGET/release/$bin" "$1/"; done
fi

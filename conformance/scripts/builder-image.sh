#!/usr/bin/env bash
# Makes the stand-in for deploy/Containerfile's build stage image, `rust:1.95-bookworm`,
# which cannot be pulled on the machines this project is built on (their only registries
# are Debian's, crates.io, PyPI and npm). tests/image.rs imports it into a podman of its
# own under that name and runs the real `podman build -f deploy/Containerfile`.
#
# What the official image is (docker-library's rust image): buildpack-deps:bookworm
# (Debian 12 with the C toolchain, curl, git and some -dev libraries; no protoc) plus
# `rustup-init --profile minimal --default-toolchain 1.95.0` with RUSTUP_HOME=/usr/local/rustup,
# CARGO_HOME=/usr/local/cargo and /usr/local/cargo/bin first on PATH.
#
# What the stand-in is: Debian 12 from debootstrap (minbase) with the C toolchain and
# nothing else the build could lean on (no protoc, no libprotobuf-dev), and Rust 1.95.0
# (rustc, cargo, rust-std, as the minimal profile has them) laid out as the official
# image lays it out. The toolchain is the one thing copied from this machine: rustup
# cannot download one here. It must be 1.95.0, checked below.
#
#   conformance/scripts/builder-image.sh        # prints the path of the rootfs tarball
#
# Made once (about 2 minutes and 1.3 GB); FJORD_BUILDER_TAR moves it
# (default /var/cache/fjord-test/rust-1.95-bookworm.tar). Remove the file to remake it.
set -euo pipefail

RUST_VERSION=1.95.0
TOOLCHAIN=$RUST_VERSION-x86_64-unknown-linux-gnu
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
# buildpack-deps:bookworm's C toolchain and fetch tools; a strict subset of that image.
PACKAGES=ca-certificates,curl,gcc,g++,libc6-dev,make,file,git,pkg-config,xz-utils
OUT=${FJORD_BUILDER_TAR:-/var/cache/fjord-test/rust-$RUST_VERSION-$SUITE.tar}

if [ -s "$OUT" ]; then
    echo "$OUT"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "builder-image.sh: run as root (debootstrap)" >&2
    exit 1
fi
command -v debootstrap >/dev/null 2>&1 || {
    echo "builder-image.sh: debootstrap is missing: run conformance/scripts/install-test-deps.sh" >&2
    exit 1
}
RUSTUP_HOME_HOST=${RUSTUP_HOME:-$HOME/.rustup}
source_toolchain=$RUSTUP_HOME_HOST/toolchains/$TOOLCHAIN
[ -d "$source_toolchain" ] || source_toolchain=$RUSTUP_HOME_HOST/toolchains/stable-x86_64-unknown-linux-gnu
rustup_bin=$(command -v rustup || true)
if [ ! -x "$source_toolchain/bin/rustc" ] || [ -z "$rustup_bin" ]; then
    echo "builder-image.sh: needs rustup and the Rust $RUST_VERSION toolchain (rustup toolchain install $RUST_VERSION)" >&2
    exit 1
fi
version=$("$source_toolchain/bin/rustc" --version)
case "$version" in
    "rustc $RUST_VERSION "*) ;;
    *) echo "builder-image.sh: $source_toolchain is $version, not rustc $RUST_VERSION" >&2; exit 1 ;;
esac

work=$(mktemp -d /tmp/fjord-builder.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
echo "builder-image.sh: debootstrap $SUITE into $root" >&2
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    echo "builder-image.sh: debootstrap failed" >&2
    exit 1
}
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*

echo "builder-image.sh: Rust $RUST_VERSION into /usr/local/rustup, proxies in /usr/local/cargo/bin" >&2
dest=$root/usr/local/rustup/toolchains/$TOOLCHAIN
mkdir -p "$dest" "$root/usr/local/cargo/bin"
# The minimal profile: rustc, cargo, rust-std. No docs, clippy or rustfmt.
for part in bin/rustc bin/cargo bin/rustdoc lib libexec etc; do
    [ -e "$source_toolchain/$part" ] || continue
    mkdir -p "$(dirname "$dest/$part")"
    cp -a "$source_toolchain/$part" "$dest/$part"
done
rm -f "$dest"/lib/rustlib/manifest-{clippy,rustfmt,rust-docs}*
printf '%s\n' rustc-x86_64-unknown-linux-gnu cargo-x86_64-unknown-linux-gnu \
    rust-std-x86_64-unknown-linux-gnu >"$dest/lib/rustlib/components"
cp "$rustup_bin" "$root/usr/local/cargo/bin/rustup"
for proxy in cargo rustc rustdoc; do
    ln -f "$root/usr/local/cargo/bin/rustup" "$root/usr/local/cargo/bin/$proxy"
done
cat >"$root/usr/local/rustup/settings.toml" <<EOF
version = "12"
default_toolchain = "$TOOLCHAIN"
profile = "minimal"
auto_self_update = "disable"
EOF

# The stand-in must not have what the Containerfile has to install itself.
for absent in usr/bin/protoc usr/include/google/protobuf/descriptor.proto; do
    if [ -e "$root/$absent" ]; then
        echo "builder-image.sh: the stand-in has /$absent; it must not" >&2
        exit 1
    fi
done

mkdir -p "$(dirname "$OUT")"
tar -C "$root" --numeric-owner -cf "$OUT.tmp" .
mv "$OUT.tmp" "$OUT"
echo "$OUT"

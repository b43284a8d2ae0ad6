#!/usr/bin/env bash
# Installs everything the conformance tests, the benchmarks and the demo run, on Debian 12,
# as root. Idempotent: packages already installed are left alone, and `apt-get update`
# runs only when something is missing. Fails with a message naming what is still missing.
#
#   iproute2                      ip, ip netns (every test)
#   util-linux                    nsenter (podman and containerd inside a node namespace),
#                                 setpriv (tests/deploy.rs confines fjord-routed to the
#                                 DaemonSet's capabilities)
#   iputils-ping                  ping from pod namespaces
#   containernetworking-plugins   the reference ptp + host-local (+ loopback) in /usr/lib/cni
#   podman runc conmon            the podman CNI end-to-end test (tests/podman.rs)
#   busybox-static                the rootfs of that test's container image
#   iperf3                        datapath throughput figures
#   procps                        ps, pgrep for debugging runaway plugins
#   python3                       demo.sh pretty-prints results with it; the policy tests'
#                                 TCP/UDP echo servers and probes (tests/policy_nft.rs)
#   nftables                      nft, which fjord-policy drives (tests/policy_nft.rs)
#   python3-venv                  the venv below for kubernetes-validate
#   etcd-server                   the etcd: store tests and `fjord-lab up --store etcd` run
#                                 real etcd members
#   protobuf-compiler             protoc, which the etcd-client crate's build script runs
#   libprotobuf-dev               google/protobuf/*.proto, which that protoc run imports
#   openssl                       tests/etcd.rs makes the certificates of its TLS members
#   iptables                      the reference portmap plugin (hostPort, tests/podman.rs)
#                                 programs its rules with it, in the test's node namespace
#   debootstrap                   builder-image.sh makes the stand-in of the image's build
#                                 stage with it (tests/image.rs, docs/testing.md)
#
# And from PyPI, in its own venv (/opt/fjord-test-venv, or $FJORD_TEST_VENV):
#   kubernetes-validate           checks deploy/*.yaml offline against the Kubernetes
#                                 schemas it bundles (tests/deploy.rs); PyYAML comes with it
set -euo pipefail

PACKAGES=(
    iproute2 util-linux iputils-ping containernetworking-plugins
    podman runc conmon busybox-static iperf3 procps python3 python3-venv
    etcd-server protobuf-compiler libprotobuf-dev nftables openssl iptables debootstrap
)
KUBERNETES_VALIDATE_VERSION=1.37.0
TEST_VENV=${FJORD_TEST_VENV:-/opt/fjord-test-venv}

if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-deps.sh: run as root (it installs Debian packages)" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-deps.sh: apt-get not found; this script targets Debian 12" >&2
    exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing+=("$pkg")
done

if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-test-deps.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's own python3 (not a pyenv or other interpreter first on PATH) makes the venv.
if ! "$TEST_VENV/bin/kubernetes-validate" --version 2>/dev/null | grep -qx "$KUBERNETES_VALIDATE_VERSION"; then
    echo "install-test-deps.sh: installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $TEST_VENV"
    /usr/bin/python3 -m venv "$TEST_VENV"
    "$TEST_VENV/bin/pip" install -q --disable-pip-version-check \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi

# What the tests execute, checked by path: a package can be installed and still not
# provide what a test expects (a renamed file, a diverted binary).
required=(
    /usr/lib/cni/ptp /usr/lib/cni/host-local /usr/lib/cni/loopback
    /usr/lib/cni/portmap /usr/lib/cni/bandwidth
    /bin/busybox "$TEST_VENV/bin/kubernetes-validate" "$TEST_VENV/bin/python"
)
commands=(ip nsenter setpriv ping podman runc conmon iperf3 etcd protoc openssl iptables debootstrap)
problems=()
for path in "${required[@]}"; do
    [ -x "$path" ] || problems+=("$path is missing")
done
# Read, not executed: the well-known protos etcd-client's protoc run imports.
[ -f /usr/include/google/protobuf/descriptor.proto ] ||
    problems+=("/usr/include/google/protobuf/descriptor.proto is missing (libprotobuf-dev)")
for cmd in "${commands[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || problems+=("command $cmd is not on PATH")
done
if [ "${#problems[@]}" -gt 0 ]; then
    printf 'install-test-deps.sh: still missing after installing packages:\n' >&2
    printf '  - %s\n' "${problems[@]}" >&2
    exit 1
fi
echo "install-test-deps.sh: test dependencies present"

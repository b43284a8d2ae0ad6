#!/usr/bin/env bash
# Installs the real BGP peers the mesh and interop tests run against (tests/mesh.rs,
# tests/interop.rs, tests/bfd.rs), on Debian 12, as root. Idempotent: packages already installed are
# left alone, and `apt-get update` runs only when something is missing.
#
#   bird2          BIRD 2 (bird, birdc): an interop peer, and the benchmark's baseline
#   gobgpd         GoBGP (gobgpd, gobgp): the second interop peer
#   frr            FRR's bfdd (run alone, no zebra) and vtysh: the BFD interop peer
#   nftables       nft: the BFD tests cut a path by dropping UDP 3784 in a test namespace
#   iperf3         datapath throughput between lab pods
#   iputils-ping   ping from pod namespaces (the continuous ping across a restart)
#   iproute2       ip, ip netns (every lab)
#   iptables       drops ICMP "fragmentation needed" in lab nodes (tests/encapsulation.rs),
#                  so a wrong MTU black-holes TCP instead of being rescued by PMTU discovery
#
# The tests run bird, gobgpd and bfdd themselves, inside lab network namespaces, with their
# own config, control socket and pid file in the test's temp dir. Debian's bird2
# package starts a `bird` service in the root namespace on install, and frr's an
# `frr` service (zebra, watchfrr); this script stops and disables them (and gobgpd's,
# should a package version ship one), so no routing
# daemon of ours runs in the root namespace and nothing can hold port 179 there.
set -euo pipefail

PACKAGES=(bird2 gobgpd frr nftables iperf3 iputils-ping iproute2 iptables)
SERVICES=(bird bird6 gobgpd frr)

say() { echo "install-routing-deps.sh: $*"; }
die() { echo "install-routing-deps.sh: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs Debian packages)"
command -v apt-get >/dev/null 2>&1 || die "apt-get not found; this script targets Debian 12"

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing+=("$pkg")
done

if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
        || { echo "install-routing-deps.sh: apt-get install ${missing[*]} failed" >&2; exit 1; }
fi

# Stop and disable the services the packages start. With systemd: disable --now and mask
# (a later package upgrade must not start bird again). Without systemd (a container):
# stop through the init script and kill a daemon still running from the package's
# default config, by the pid file it wrote.
for svc in "${SERVICES[@]}"; do
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        if systemctl list-unit-files "$svc.service" --no-legend 2>/dev/null | grep -q .; then
            systemctl disable --now "$svc.service" >/dev/null 2>&1 || true
            systemctl mask "$svc.service" >/dev/null 2>&1 || true
        fi
    elif [ -x "/etc/init.d/$svc" ]; then
        "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
        command -v update-rc.d >/dev/null 2>&1 && update-rc.d "$svc" disable >/dev/null 2>&1 || true
    fi
done
# A bird still running from the package's own config (no -c: /etc/bird/bird.conf), by
# the pid file it wrote; a bird a test started always has `-c CONF` and is left alone.
for pidfile in /run/bird/bird.pid /run/bird.pid; do
    [ -s "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    [ -r "/proc/$pid/cmdline" ] || continue
    args=$(tr '\0' ' ' <"/proc/$pid/cmdline")
    case "$args" in
        *bird\ *-c\ *) ;;
        *bird*) kill "$pid" 2>/dev/null || true ;;
    esac
done

# What the tests execute, checked by name: a package can be installed and still not
# provide what a test expects.
problems=()
for cmd in bird birdc gobgpd gobgp vtysh nft iperf3 ping ip; do
    command -v "$cmd" >/dev/null 2>&1 || problems+=("command $cmd is not on PATH")
done
[ -x /usr/lib/frr/bfdd ] || problems+=("/usr/lib/frr/bfdd is missing (Debian's frr)")
if command -v bird >/dev/null 2>&1; then
    version=$(bird --version 2>&1 || true)
    case "$version" in
        *" 2."*) ;;
        *) problems+=("bird is not BIRD 2 (bird --version says: $version)") ;;
    esac
fi
if [ "${#problems[@]}" -gt 0 ]; then
    printf 'install-routing-deps.sh: still missing after installing packages:\n' >&2
    printf '  - %s\n' "${problems[@]}" >&2
    exit 1
fi
say "routing test dependencies present ($(bird --version 2>&1 | head -1); gobgp $(gobgp --version 2>&1 | awk '{print $3}' | head -1))"

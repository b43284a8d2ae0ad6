#!/usr/bin/env bash
# One-node demo: builds fjord, attaches two pods to a throwaway node namespace with the
# real `fjord` plugin and `fjord-ipam`, shows what the kernel got, pings pod to pod,
# detaches both and removes everything. Nothing touches the root namespace's routes.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" -ne 0 ]; then
    echo "demo.sh: needs root (it creates network namespaces)" >&2
    exit 1
fi
if [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; fi

conformance/scripts/install-test-deps.sh
echo "==> building fjord and fjord-ipam (release)"
cargo build --release --quiet -p fjord-cni -p fjord-ipam
BIN=$PWD/target/release

NODE=fjdemo-node
WORK=$(mktemp -d /tmp/fjord-demo.XXXXXX)
cleanup() {
    for p in fjdemo-p1 fjdemo-p2; do ip netns del "$p" 2>/dev/null || true; done
    ip netns del "$NODE" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
cleanup 2>/dev/null; WORK=$(mktemp -d /tmp/fjord-demo.XXXXXX)

cat > "$WORK/conf.json" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "fjord",
  "type": "fjord",
  "mtu": 1500,
  "logFile": "$WORK/cni.log",
  "ipam": {
    "type": "fjord-ipam",
    "nodeName": "demo-node",
    "store": "dir:$WORK/ipam",
    "pools": ["10.244.0.0/16", "fd00:244::/56"]
  }
}
JSON

ip netns add "$NODE"
ip -n "$NODE" link set lo up
# Runs the plugin inside the node namespace, the way a runtime on that node would.
cni() { # verb container pod-netns
    CNI_COMMAND=$1 CNI_CONTAINERID=$2 CNI_NETNS=/var/run/netns/$3 CNI_IFNAME=eth0 \
        CNI_PATH="$BIN" nsenter --net=/var/run/netns/$NODE "$BIN/fjord" < "$WORK/conf.json"
}
for p in fjdemo-p1 fjdemo-p2; do
    ip netns add "$p"
    ip -n "$p" link set lo up
    echo "==> ADD $p"
    cni ADD "demo-$p" "$p" | tee "$WORK/$p.json" | python3 -m json.tool --compact
done
echo "==> node routes"; ip -n "$NODE" route; ip -n "$NODE" -6 route | grep -v '^fe80' || true
echo "==> pod 1"; ip -n fjdemo-p1 -br addr show eth0; ip -n fjdemo-p1 route; ip -n fjdemo-p1 neigh
P2V4=$(python3 -c 'import json,sys; print([i["address"].split("/")[0] for i in json.load(open(sys.argv[1]))["ips"] if ":" not in i["address"]][0])' "$WORK/fjdemo-p2.json")
P2V6=$(python3 -c 'import json,sys; print([i["address"].split("/")[0] for i in json.load(open(sys.argv[1]))["ips"] if ":" in i["address"]][0])' "$WORK/fjdemo-p2.json")
echo "==> ping pod 1 -> pod 2 ($P2V4, $P2V6)"
ip netns exec fjdemo-p1 ping -c 3 -i 0.2 -W 2 "$P2V4"
ip netns exec fjdemo-p1 ping -c 3 -i 0.2 -W 2 "$P2V6"
for p in fjdemo-p1 fjdemo-p2; do echo "==> DEL $p"; cni DEL "demo-$p" "$p"; done
echo "==> the log ($WORK/cni.log)"; tail -n 4 "$WORK/cni.log"
echo "demo passed: two pods attached, pinged each other over IPv4 and IPv6, and were detached"

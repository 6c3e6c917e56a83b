#!/usr/bin/env bash
# The product on its embedded default: two hosts and a router in network namespaces, the
# dataplane server inside the router, dpctl attaching both router interfaces, pings across,
# counters printed. Everything is torn down on exit, Ctrl-C included.
#
#   scripts/demo.sh          run to completion
#   scripts/demo.sh --wait   keep the topology and server up until Ctrl-C (try dpctl yourself)
#
# DEMO_BIN_DIR=DIR uses prebuilt binaries from DIR instead of bootstrapping and building.
set -euo pipefail

cd "$(dirname "$0")/.."
WAIT=0
[ "${1:-}" = "--wait" ] && WAIT=1

if [ -z "${DEMO_BIN_DIR:-}" ]; then
    ./scripts/bootstrap.sh
    cargo build --locked
    BIN=target/debug
else
    BIN=$DEMO_BIN_DIR
fi

id=$$
H1=demo-h1-$id; RTR=demo-rtr-$id; H2=demo-h2-$id
RUN=/run/dataplane-demo-$id
BPFFS=/sys/fs/bpf/dataplane-demo-$id
SOCK=$RUN/dataplane.sock
SERVER_PID=

cleanup() {
    set +e
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID"
        wait "$SERVER_PID" 2>/dev/null
    fi
    for ns in "$H1" "$RTR" "$H2"; do
        ip netns del "$ns" 2>/dev/null
    done
    rm -rf "$RUN"
    [ -d "$BPFFS" ] && rm -rf "$BPFFS"
    echo "demo: cleaned up (namespaces, server, socket, pins)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
in_ns() { local ns=$1; shift; nsenter --net=/run/netns/"$ns" -- "$@"; }
dpctl() { "$BIN/dpctl" --server "unix:$SOCK" "$@"; }

step "topology: $H1 (192.0.2.2) -- r0 [$RTR] r1 -- $H2 (198.51.100.2)"
for ns in "$H1" "$RTR" "$H2"; do
    ip netns add "$ns"
    in_ns "$ns" ip link set lo up
done
in_ns "$RTR" ip link add r0 type veth peer name h1-eth0
in_ns "$RTR" ip link add r1 type veth peer name h2-eth0
in_ns "$RTR" ip link set h1-eth0 netns "$H1"
in_ns "$RTR" ip link set h2-eth0 netns "$H2"
in_ns "$H1" ip link set h1-eth0 name eth0
in_ns "$H2" ip link set h2-eth0 name eth0
in_ns "$RTR" ip addr add 192.0.2.1/24 dev r0
in_ns "$RTR" ip addr add 198.51.100.1/24 dev r1
in_ns "$H1" ip addr add 192.0.2.2/24 dev eth0
in_ns "$H2" ip addr add 198.51.100.2/24 dev eth0
for l in r0 r1; do in_ns "$RTR" ip link set "$l" up; done
in_ns "$H1" ip link set eth0 up
in_ns "$H2" ip link set eth0 up
in_ns "$RTR" sysctl -qw net.ipv4.ip_forward=1
in_ns "$H1" ip route add default via 192.0.2.1
in_ns "$H2" ip route add default via 198.51.100.1

step "dataplane-server in $RTR (socket $SOCK, pins $BPFFS)"
mkdir -p "$RUN"
# nsenter --net keeps the root mount namespace, so the server sees the host's bpffs.
nsenter --net=/run/netns/"$RTR" -- "$BIN/dataplane-server" \
    --grpc-socket "$SOCK" --bpffs "$BPFFS" 2> "$RUN/server.log" &
SERVER_PID=$!
for _ in $(seq 1 200); do
    dpctl status >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$RUN/server.log"; exit 1; }
    sleep 0.05
done
dpctl status

step "dpctl interface add r0 / r1"
dpctl interface add r0
dpctl interface add r1

step "ping $H1 -> $H2 through the router"
in_ns "$H1" ping -c 5 -i 0.2 -W 2 198.51.100.2

step "dpctl interface list"
dpctl interface list

step "dpctl status"
dpctl status

if [ "$WAIT" = 1 ]; then
    step "up until Ctrl-C; try: $BIN/dpctl --server unix:$SOCK interface list"
    wait "$SERVER_PID"
fi
step "done"

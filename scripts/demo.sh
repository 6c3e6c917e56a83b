#!/usr/bin/env bash
# The product on its embedded default: two hosts and a router in network namespaces, the
# dataplane server inside the router (kernel forwarding off), dpctl programming interfaces, next
# hops and routes, IPv4/IPv6 pings and an iperf3 TCP run forwarded by XDP, counters
# printed. Everything is torn down on exit, Ctrl-C included.
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
IPERF_PID=

cleanup() {
    set +e
    [ -n "$IPERF_PID" ] && kill "$IPERF_PID" 2>/dev/null
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID"
        wait "$SERVER_PID" 2>/dev/null
    fi
    for ns in "$H1" "$RTR" "$H2"; do
        ip netns del "$ns" 2>/dev/null
    done
    rm -rf "$RUN"
    # The server leaves its links and maps pinned when it stops (forwarding survives it);
    # removing the pins detaches them.
    [ -d "$BPFFS" ] && rm -rf "$BPFFS"
    echo "demo: cleaned up (namespaces, server, socket, pins)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
in_ns() { local ns=$1; shift; nsenter --net=/run/netns/"$ns" -- "$@"; }
dpctl() { "$BIN/dpctl" --server "unix:$SOCK" "$@"; }

step "topology: $H1 (192.0.2.2, 2001:db8:1::2) -- r0 [$RTR] r1 -- $H2 (198.51.100.2, 2001:db8:2::2)"
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
in_ns "$RTR" ip -6 addr add 2001:db8:1::1/64 dev r0 nodad
in_ns "$RTR" ip -6 addr add 2001:db8:2::1/64 dev r1 nodad
in_ns "$H1" ip addr add 192.0.2.2/24 dev eth0
in_ns "$H2" ip addr add 198.51.100.2/24 dev eth0
in_ns "$H1" ip -6 addr add 2001:db8:1::2/64 dev eth0 nodad
in_ns "$H2" ip -6 addr add 2001:db8:2::2/64 dev eth0 nodad
for l in r0 r1; do in_ns "$RTR" ip link set "$l" up; done
for ns in "$H1" "$H2"; do
    in_ns "$ns" ip link set eth0 up
    # A veth leaves L4 checksums for "hardware" to fill in and an XDP redirect loses that
    # state; hosts behind real NICs send complete checksums, so make the veth hosts do too.
    in_ns "$ns" ethtool -K eth0 gro on tx off >/dev/null
done
in_ns "$H1" ip route add default via 192.0.2.1
in_ns "$H2" ip route add default via 198.51.100.1
in_ns "$H1" ip -6 route add default via 2001:db8:1::1
in_ns "$H2" ip -6 route add default via 2001:db8:2::1

step "kernel forwarding OFF in $RTR: nothing crosses it yet"
in_ns "$RTR" sysctl -w net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0
if in_ns "$H1" ping -c 1 -W 1 -q 198.51.100.2 >/dev/null; then
    echo "demo: the router's kernel forwarded with ip_forward=0" >&2
    exit 1
fi
echo "ping $H1 -> $H2: no answer (as expected)"

step "dataplane-server in $RTR (socket $SOCK, pins $BPFFS)"
mkdir -p "$RUN"
# nsenter --net keeps the root mount namespace, so the server sees the host's bpffs.
nsenter --net=/run/netns/"$RTR" -- "$BIN/dataplane-server" \
    --grpc-socket "$SOCK" --bpffs "$BPFFS" --state-file "$RUN/state.json" 2> "$RUN/server.log" &
SERVER_PID=$!
for _ in $(seq 1 200); do
    dpctl status >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$RUN/server.log"; exit 1; }
    sleep 0.05
done
dpctl status

step "the controller's part, with dpctl: interfaces, next hops, routes (VRF 0)"
H2_MAC=$(in_ns "$H2" ip -o link show eth0 | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p')
H1_MAC=$(in_ns "$H1" ip -o link show eth0 | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p')
run() { echo "+ dpctl $*"; dpctl "$@"; }
run interface add r0 --vrf 0
run interface add r1 --vrf 0
run nexthop add 1 --interface r1 --dst-mac "$H2_MAC"
run nexthop add 2 --interface r0 --dst-mac "$H1_MAC"
run nexthop add 3 --receive
cat > "$RUN/routes" <<ROUTES
# prefix            next hop  (vrf 0)
198.51.100.0/24     1
2001:db8:2::/64     1
192.0.2.0/24        2
2001:db8:1::/64     2
# the router's own addresses: to its kernel stack (ARP/ND replies, pings to the router)
192.0.2.1/32        3
198.51.100.1/32     3
2001:db8:1::1/128   3
2001:db8:2::1/128   3
ROUTES
run route add --file "$RUN/routes"
run route list
run route lookup 198.51.100.2

step "ping $H1 -> $H2 through the router (IPv4 and IPv6), forwarded by XDP"
in_ns "$H1" ping -c 5 -i 0.2 -W 2 198.51.100.2
in_ns "$H1" ping -6 -c 5 -i 0.2 -W 2 2001:db8:2::2

step "iperf3 TCP $H1 -> $H2 for 2 s"
in_ns "$H2" iperf3 -s -1 -B 198.51.100.2 >/dev/null &
IPERF_PID=$!
for _ in $(seq 1 50); do
    in_ns "$H2" ss -ltn 2>/dev/null | grep -q ':5201' && break
    sleep 0.05
done
in_ns "$H1" timeout 20 iperf3 -c 198.51.100.2 -t 2 | grep -E 'sender|receiver'
wait "$IPERF_PID"
IPERF_PID=

step "ping with TTL 1: the router answers time exceeded"
in_ns "$H1" ping -c 1 -W 2 -t 1 198.51.100.2 | grep -i 'exceeded' || true

step "dpctl nexthop list"
dpctl nexthop list

step "dpctl interface list"
dpctl interface list

step "dpctl status"
dpctl status

if [ "$WAIT" = 1 ]; then
    step "up until Ctrl-C; try: $BIN/dpctl --server unix:$SOCK interface list"
    wait "$SERVER_PID"
fi
step "done"

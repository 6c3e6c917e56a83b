#!/usr/bin/env bash
# The product on its embedded default: two hosts and two router nodes in network namespaces, a
# dataplane server in each node (kernel forwarding off), and the reference controller
# (dataplane-controller) programming both from one YAML file and answering node A's flow misses
# by its flow rules. IPv4/IPv6 pings and an iperf3 TCP run cross both nodes through XDP; a web
# port is admitted and another refused by the flow rules. Everything is torn down on exit,
# Ctrl-C included.
#
#   h1 --- [r0] node A [r1] --- [s0] node B [s1] --- h2
#
#   scripts/demo.sh          run to completion
#   scripts/demo.sh --wait   keep everything up until Ctrl-C (edit the demo file: the controller
#                            applies the change; try dpctl and `dataplane-controller status`)
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
H1=demo-h1-$id; RTR=demo-rtr-$id; RTB=demo-rtb-$id; H2=demo-h2-$id
RUN=/run/dataplane-demo-$id
BPFFS=/sys/fs/bpf/dataplane-demo-$id
SOCK_A=$RUN/node-a.sock
SOCK_B=$RUN/node-b.sock
STATUS=$RUN/controller.sock
PIDS=()

cleanup() {
    set +e
    # Controller first (it would reconnect), then the servers, then the namespaces.
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    for ns in "$H1" "$RTR" "$RTB" "$H2"; do
        ip netns del "$ns" 2>/dev/null
    done
    rm -rf "$RUN"
    # The servers leave their links and maps pinned when they stop (forwarding survives
    # them); removing the pins detaches them.
    [ -d "$BPFFS" ] && rm -rf "$BPFFS"
    echo "demo: cleaned up (namespaces, servers, controller, sockets, pins)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
in_ns() { local ns=$1; shift; nsenter --net=/run/netns/"$ns" -- "$@"; }
dpctl_a() { "$BIN/dpctl" --server "unix:$SOCK_A" "$@"; }
dpctl_b() { "$BIN/dpctl" --server "unix:$SOCK_B" "$@"; }
veth() { # NS IF PEER_NS PEER_IF
    in_ns "$1" ip link add "$2" type veth peer name "tmp$id"
    in_ns "$1" ip link set "tmp$id" netns "$3"
    in_ns "$3" ip link set "tmp$id" name "$4"
    in_ns "$1" ip link set "$2" up
    in_ns "$3" ip link set "$4" up
}
addr() { # NS IF V4 V6
    in_ns "$1" ip addr add "$3" dev "$2"
    in_ns "$1" ip -6 addr add "$4" dev "$2" nodad
}

step "topology: $H1 (192.0.2.2) -- r0 [$RTR] r1 -- s0 [$RTB] s1 -- $H2 (198.51.100.2)"
for ns in "$H1" "$RTR" "$RTB" "$H2"; do
    ip netns add "$ns"
    in_ns "$ns" ip link set lo up
done
veth "$RTR" r0 "$H1" eth0
veth "$RTR" r1 "$RTB" s0
veth "$RTB" s1 "$H2" eth0
addr "$H1" eth0 192.0.2.2/24 2001:db8:1::2/64
addr "$RTR" r0 192.0.2.1/24 2001:db8:1::1/64
addr "$RTR" r1 203.0.113.1/30 2001:db8:ff::1/64
addr "$RTB" s0 203.0.113.2/30 2001:db8:ff::2/64
addr "$RTB" s1 198.51.100.1/24 2001:db8:2::1/64
addr "$H2" eth0 198.51.100.2/24 2001:db8:2::2/64
for ns in "$H1" "$H2"; do
    # A veth leaves L4 checksums for "hardware" to fill in and an XDP redirect loses that
    # state; hosts behind real NICs send complete checksums, so make the veth hosts do too.
    in_ns "$ns" ethtool -K eth0 gro on tx off >/dev/null
done
in_ns "$H1" ip route add default via 192.0.2.1
in_ns "$H2" ip route add default via 198.51.100.1
in_ns "$H1" ip -6 route add default via 2001:db8:1::1
in_ns "$H2" ip -6 route add default via 2001:db8:2::1

step "kernel forwarding OFF in both nodes: nothing crosses them yet"
for ns in "$RTR" "$RTB"; do
    in_ns "$ns" sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0
done
if in_ns "$H1" ping -c 1 -W 1 -q 198.51.100.2 >/dev/null; then
    echo "demo: the nodes' kernels forwarded with ip_forward=0" >&2
    exit 1
fi
echo "ping $H1 -> $H2: no answer (as expected)"

step "a dataplane-server in each node ($SOCK_A, $SOCK_B; pins under $BPFFS)"
mkdir -p "$RUN"
start_server() { # NS SOCK NAME
    # nsenter --net keeps the root mount namespace, so the server sees the host's bpffs.
    # Prometheus metrics on the node's own loopback (each node namespace has its own).
    nsenter --net=/run/netns/"$1" -- "$BIN/dataplane-server" \
        --grpc-socket "$2" --bpffs "$BPFFS/$3" --state-file "$RUN/$3.state.json" \
        --metrics-listen 127.0.0.1:9464 2> "$RUN/$3.server.log" &
    PIDS=("$!" "${PIDS[@]}")
}
start_server "$RTR" "$SOCK_A" node-a
start_server "$RTB" "$SOCK_B" node-b
for _ in $(seq 1 400); do
    dpctl_a status >/dev/null 2>&1 && dpctl_b status >/dev/null 2>&1 && break
    sleep 0.05
done
dpctl_a status | grep -E "^(version|kernel|generation)"
dpctl_b status | grep -E "^(version|kernel|generation)"

mac() { in_ns "$1" ip -o link show "$2" | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p'; }
step "the controller's file: both nodes, their routes, and node A's flow rules ($RUN/demo.yaml)"
cat > "$RUN/demo.yaml" <<YAML
# One file, two nodes. The controller resyncs each node whenever either side (re)starts,
# applies edits of this file as diffs, and decides node A's flow misses by its flow_rules.
nodes:
  node-a:
    server: unix:$SOCK_A
    interfaces:
      - {name: r0, flows: true}          # from h1: every new flow is decided by flow_rules
      - {name: r1}
    next_hops:
      - {id: 1, interface: r1, dst_mac: "$(mac "$RTB" s0)"}
      - {id: 2, interface: r0, dst_mac: "$(mac "$H1" eth0)"}
      - {id: 3, receive: true}           # the node's own addresses: its kernel stack
    routes:
      - {prefix: 198.51.100.0/24, next_hop: 1}
      - {prefix: "2001:db8:2::/64", next_hop: 1}
      - {prefix: 192.0.2.0/24, next_hop: 2}
      - {prefix: "2001:db8:1::/64", next_hop: 2}
      - {prefix: 192.0.2.1/32, next_hop: 3}
      - {prefix: "2001:db8:1::1/128", next_hop: 3}
    flow_rules:                          # first match wins; replies are installed with the flow
      - {protocol: icmp, action: forward}
      - {protocol: icmpv6, action: forward}
      - {protocol: tcp, dst_ports: 5201, action: forward}   # iperf3
      - {protocol: tcp, dst_ports: 8000, action: forward}   # the web server h2 runs on 8000
      - {action: drop}                                      # everything else, 8080 included
  node-b:
    server: unix:$SOCK_B
    interfaces:
      - {name: s0}
      - {name: s1}
    next_hops:
      - {id: 1, interface: s1, dst_mac: "$(mac "$H2" eth0)"}
      - {id: 2, interface: s0, dst_mac: "$(mac "$RTR" r1)"}
      - {id: 3, receive: true}
    routes:
      - {prefix: 198.51.100.0/24, next_hop: 1}
      - {prefix: "2001:db8:2::/64", next_hop: 1}
      - {prefix: 192.0.2.0/24, next_hop: 2}
      - {prefix: "2001:db8:1::/64", next_hop: 2}
      - {prefix: 198.51.100.1/32, next_hop: 3}
      - {prefix: "2001:db8:2::1/128", next_hop: 3}
YAML
cat "$RUN/demo.yaml"
"$BIN/dataplane-controller" check --file "$RUN/demo.yaml"

step "dataplane-controller run --file $RUN/demo.yaml"
"$BIN/dataplane-controller" run --file "$RUN/demo.yaml" --status-socket "$STATUS" 2> "$RUN/controller.log" &
PIDS=("$!" "${PIDS[@]}")
for _ in $(seq 1 200); do
    st=$("$BIN/dataplane-controller" status --status-socket "$STATUS" -o json 2>/dev/null || true)
    [ "$(grep -c '"state": "ready"' <<<"$st")" = 2 ] && break
    sleep 0.05
done
"$BIN/dataplane-controller" status --status-socket "$STATUS"
dpctl_a route list

step "ping $H1 -> $H2 across both nodes (IPv4 and IPv6), forwarded by XDP, admitted by flow rules"
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

step "web servers on $H2 ports 8000 and 8080: the flow rules admit 8000 and refuse 8080"
mkdir -p "$RUN/www" && echo "hello from h2" > "$RUN/www/index.html"
for port in 8000 8080; do
    in_ns "$H2" python3 -m http.server "$port" --bind 198.51.100.2 --directory "$RUN/www" >/dev/null 2>&1 &
    PIDS=("$!" "${PIDS[@]}")
done
# Ready when h2 itself gets the page from both (python's server resolves its own name before
# it listens, which can take seconds in a namespace without DNS).
for _ in $(seq 1 200); do
    in_ns "$H2" curl -sf --max-time 1 http://198.51.100.2:8000/ >/dev/null &&
        in_ns "$H2" curl -sf --max-time 1 http://198.51.100.2:8080/ >/dev/null && break
    sleep 0.05
done
for port in 8000 8080; do
    if body=$(in_ns "$H1" curl -s --max-time 3 "http://198.51.100.2:$port/"); then
        echo "port $port: admitted: $body"
    else
        echo "port $port: refused (no answer: the flow is DROP in node A's XDP)"
    fi
done

step "ping with TTL 1: node A answers time exceeded"
in_ns "$H1" ping -c 1 -W 2 -t 1 198.51.100.2 | grep -i 'exceeded' || true

step "node A: interfaces (dpctl interface list)"
dpctl_a interface list

step "node A: flows the controller installed (dpctl flow list)"
dpctl_a flow list

step "node A: Prometheus metrics (curl http://127.0.0.1:9464/metrics in its namespace), a few of them"
if metrics=$(in_ns "$RTR" curl -sf --max-time 3 http://127.0.0.1:9464/metrics); then
    grep -E '^dataplane_(interface_packets_total\{.*reason="forwarded"|nexthop_packets_total|flow_entries\{.*kind="(forward|hold)"|grpc_requests_total)' \
        <<<"$metrics" | head -n 16
else
    echo "demo: node A's metrics endpoint did not answer" >&2
fi

step "the controller: nodes, generations, flow decisions (dataplane-controller status)"
"$BIN/dataplane-controller" status --status-socket "$STATUS"

if [ "$WAIT" = 1 ]; then
    step "up until Ctrl-C; edit $RUN/demo.yaml and watch: $BIN/dataplane-controller status --status-socket $STATUS"
    wait "${PIDS[-1]}"
fi
step "done"

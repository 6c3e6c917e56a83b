# Image with dataplane-server and dpctl. Build: docker build -t dataplane .
# Run (needs the host's bpffs and the capabilities BPF and XDP need):
#   docker run --rm --network host --privileged -v /sys/fs/bpf:/sys/fs/bpf \
#       -v /run/dataplane:/run/dataplane dataplane
FROM rust:1.95-bookworm AS build
# The eBPF crate builds with nightly + rust-src for bpfel-unknown-none (see scripts/bootstrap.sh).
RUN rustup toolchain install nightly --profile minimal --component rust-src
WORKDIR /src
COPY . .
RUN BOOTSTRAP_BUILD_ONLY=1 scripts/bootstrap.sh \
    && cargo build --release --locked \
    && install -m 0755 target/release/dataplane-server target/release/dpctl /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends iproute2 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/dataplane-server /usr/local/bin/dpctl /usr/local/bin/
ENTRYPOINT ["dataplane-server"]

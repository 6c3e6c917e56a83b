//! Builds the eBPF crate (nightly, bpfel-unknown-none) and leaves the object in OUT_DIR, where
//! `dataplane::loader` embeds it. One stable `cargo build` thus builds both sides.

fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../dataplane-ebpf");
    // The eBPF program embeds the shared types: rebuild when they change too.
    println!("cargo:rerun-if-changed={}", concat!(env!("CARGO_MANIFEST_DIR"), "/../dataplane-common"));
    aya_build::build_ebpf(
        [aya_build::Package { name: "dataplane-ebpf", root_dir: root, ..Default::default() }],
        aya_build::Toolchain::default(),
    )
}

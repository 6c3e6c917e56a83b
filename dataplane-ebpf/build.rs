//! Linker flags for the eBPF object.

fn main() {
    // bpf-linker asks LLVM for `--bpf-expand-memcpy-in-order` by default, which turns off the
    // inline expansion of constant-size memset/memcpy/memcmp: every struct init, copy and
    // compare then becomes a call to a byte-at-a-time loop (measured: ~70 ns to zero one
    // 64-byte `Packet`). Without it LLVM expands them into word-sized loads and stores.
    println!("cargo:rustc-link-arg=--disable-expand-memcpy-in-order");
    println!("cargo:rerun-if-changed=build.rs");
}

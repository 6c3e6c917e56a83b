//! The kernel side as the domain sees it: the [`Dataplane`] trait, implemented for real by
//! [`loader::KernelDataplane`] and by an in-memory fake in the domain's unit tests.
//!
//! This module is the only code that touches `aya::maps` and `aya::programs`.

pub mod error;
pub mod loader;
pub mod maps;

use dataplane_common::InterfaceStats;

pub use error::DataplaneError;
pub use loader::{KernelDataplane, LoaderConfig};

/// How to attach the XDP program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// Native where the driver supports it, generic otherwise.
    Auto,
    /// Driver (native) XDP only.
    Native,
    /// Generic (skb) XDP.
    Generic,
}

/// Where a program is hooked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    XdpIngress,
    TcEgress,
}

/// What attaching the programs to one interface produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// The mode the XDP program actually runs in: `Native` or `Generic`, never `Auto`.
    pub xdp_mode: XdpMode,
    /// Kernel bpf link ids.
    pub xdp_link_id: u32,
    pub tc_link_id: u32,
}

/// A loaded program as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramStatus {
    pub name: String,
    pub kind: &'static str,
    pub kernel_id: u32,
    pub tag: u64,
}

/// A map as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapStatus {
    pub name: &'static str,
    pub kind: String,
    pub kernel_id: u32,
    pub max_entries: u32,
    pub key_size: u32,
    pub value_size: u32,
    /// Keys present, for maps where the kernel can enumerate them (hashes); `None` for arrays,
    /// whose occupancy only the domain knows (slots allocated).
    pub keys: Option<u64>,
    pub pin_path: String,
}

/// The operations the domain needs from the kernel. Every method either fully succeeds or leaves
/// the kernel as it was.
pub trait Dataplane: Send + Sync + 'static {
    /// The ifindex of `name` in the server's network namespace, `None` if there is no such link.
    fn ifindex(&self, name: &str) -> Result<Option<u32>, DataplaneError>;

    /// Registers `ifindex` under `slot` (counters zeroed) and attaches the XDP ingress and TC
    /// egress programs to it.
    fn attach(
        &self,
        slot: u32,
        name: &str,
        ifindex: u32,
        mode: XdpMode,
    ) -> Result<Attachment, DataplaneError>;

    /// Unregisters `ifindex` and detaches both programs from it.
    fn detach(&self, ifindex: u32) -> Result<(), DataplaneError>;

    /// Counters of `slot`, summed over CPUs.
    fn interface_stats(&self, slot: u32) -> Result<InterfaceStats, DataplaneError>;

    fn programs(&self) -> Result<Vec<ProgramStatus>, DataplaneError>;

    fn maps(&self) -> Result<Vec<MapStatus>, DataplaneError>;

    /// The bpffs directory the maps are pinned under.
    fn pin_root(&self) -> String;
}

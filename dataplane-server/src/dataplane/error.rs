//! Errors of the dataplane layer. The domain maps them to its own errors; nothing above the
//! domain sees these.

use std::path::PathBuf;

/// A kernel operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("loading the eBPF object failed: {source}")]
    Load {
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("program {program}: {op} failed: {source}")]
    Program {
        program: &'static str,
        op: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("map {map}: {op} failed: {source}")]
    Map {
        map: &'static str,
        op: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("program {program}: link {op} failed: {source}")]
    Link {
        program: &'static str,
        op: &'static str,
        #[source]
        source: Box<aya::programs::links::LinkError>,
    },
    #[error("map TX_PORTS: {op} failed: {source}")]
    DevMap {
        op: &'static str,
        #[source]
        source: Box<aya::maps::xdp::XdpMapError>,
    },
    #[error("the eBPF object has no {what} named {name}")]
    Missing { what: &'static str, name: &'static str },
    #[error("re-injecting a held packet: {reason}")]
    Reinject { reason: &'static str },
    #[error("program {program} ended with XDP action {verdict}, not its success ({expected})")]
    Verdict { program: &'static str, verdict: u32, expected: u32 },
    #[error("interface {interface}: XDP mode {mode} is not supported by its driver")]
    XdpModeUnsupported { interface: String, mode: &'static str },
    #[error("interface {interface}: another XDP program is already attached")]
    XdpBusy { interface: String },
    #[error("interface {interface} disappeared while being attached")]
    InterfaceGone { interface: String },
    #[error("{path}: {op} failed: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not on a bpf filesystem; mount one (mount -t bpf bpf /sys/fs/bpf), and start the server with `nsenter --net=...` rather than `ip netns exec`, which hides the host's bpffs")]
    NotBpffs { path: PathBuf },
    #[error("test run: the frame is {len} bytes, the harness needs at least {min}")]
    FrameTooShort { len: usize, min: usize },
    #[error("pinned map {map} ({path}) does not have the layout this build expects: expected {expected}, found {found}; start with --reset to drop the old dataplane, or run the build that pinned it")]
    PinnedMapMismatch { map: &'static str, path: PathBuf, expected: String, found: String },
    #[error("the eBPF object does not parse: {detail}")]
    ObjectParse { detail: String },
    #[error("{path} is in use by another dataplane-server ({holder}): one server owns a pin directory; stop that one first, or give this one its own --bpffs")]
    PinsInUse { path: PathBuf, holder: String },
    #[error("pinned map(s) {maps} missing from {dir}, used by no attached program, and the only copy of forwarding state ({holds}): starting would create them empty and the server would no longer know what XDP forwards by them. Nothing was changed. Put the pins back if you still can, or start once with --reset (detaches the dataplane, removes every pin and the state file) and replay the configuration from the controller")]
    PinnedMapsLost { maps: String, dir: PathBuf, holds: String },
    #[error("map {map}: the pinned programs use different maps of that name ({ids}); nothing was changed; start with --reset to drop the dataplane")]
    ProgramsDisagree { map: &'static str, ids: String },
    #[error("map {map}: pinning at {path} failed: {source}")]
    PinMap {
        map: &'static str,
        path: PathBuf,
        #[source]
        source: Box<aya::pin::PinError>,
    },
    #[error("{map}: index {slot} is out of range (max {max})")]
    SlotOutOfRange { map: &'static str, slot: u32, max: u32 },
}

impl DataplaneError {
    pub(crate) fn program(program: &'static str, op: &'static str) -> impl FnOnce(aya::programs::ProgramError) -> Self {
        move |e| Self::Program { program, op, source: Box::new(e) }
    }

    pub(crate) fn map(map: &'static str, op: &'static str) -> impl FnOnce(aya::maps::MapError) -> Self {
        move |e| Self::Map { map, op, source: Box::new(e) }
    }
}

//! The kernel side as the domain sees it. One small trait per concern, each implemented for real
//! by [`KernelDataplane`] in the concern's own file beside its typed map wrappers, and by an
//! in-memory fake in the domain's unit tests; [`Dataplane`] is their sum, so `Domain<D>` keeps one
//! parameter.
//!
//! | concern | trait | maps |
//! |---|---|---|
//! | [`interfaces`] | [`Interfaces`] | `INTERFACES`, `INTERFACES_HIGH`, `IFACE_STATS`, `TX_PORTS`, the links |
//! | [`nexthops`] | [`NextHops`] | `NEXTHOPS`, `NEXTHOP_STATS` |
//! | [`routes`] | [`Routes`] | `ROUTES_V4`, `ROUTES_V6`, `ROUTE4_RECORDS` |
//! | [`fib4`] | [`Fib4`] | `FIB4_VRFS`, `FIB4_CHUNKS` |
//! | [`policies`] | [`Policies`] | `POLICY_*` |
//! | [`flows`] | [`Flows`] | `FLOWS_V4`, `FLOWS_V6`, `FLOW_CONFIG` |
//! | [`lifecycle`] | [`Lifecycle`] | programs, every map's status, the generation |
//!
//! [`loader`] loads, pins, adopts and upgrades the programs, owning the pin directory through
//! [`pinlock`] and keeping its pins naming the maps in use through [`pincheck`]; [`testrun`] runs them by BPF_PROG_TEST_RUN; [`flow_misses`] reads the ring
//! buffer. This module is the only code that touches `aya::maps` and `aya::programs`.

pub mod counters;
pub mod error;
pub mod fib4;
pub mod flow_misses;
pub mod flows;
pub mod globals;
pub mod interfaces;
pub mod lifecycle;
pub mod loader;
mod mmap;
pub mod netdev;
pub mod nexthops;
pub mod pincheck;
pub mod pinlock;
pub mod policies;
pub mod routes;
pub mod testrun;

pub use error::DataplaneError;
pub use fib4::Fib4;
pub use flow_misses::{FlowMiss, FlowMissReader};
pub use flows::{FlowKey, Flows, NO_EGRESS};
pub use interfaces::{Attachment, Hook, InterfaceParams, Interfaces, KernelInterface, LinkInfo, XdpMode};
pub use lifecycle::{Lifecycle, MapStatus, ProgramStatus};
pub use loader::{AdoptedLinks, KernelDataplane, LoadReport, LoaderConfig};
pub use nexthops::{NextHopParams, NextHops};
pub use pincheck::{PinFix, PinFound, PinHealth, PinPhase, PinRepair};
pub use policies::{Policies, PolicyImage};
pub use routes::{RouteMatch, Routes};
pub use testrun::{TestProgram, TestRunOutcome};

/// Everything the domain needs from the kernel. Every method of every part either fully
/// succeeds or leaves the kernel as it was.
pub trait Dataplane:
    Interfaces + NextHops + Routes + Fib4 + Policies + Flows + Lifecycle + Send + Sync + 'static
{
}

impl<T> Dataplane for T where
    T: Interfaces + NextHops + Routes + Fib4 + Policies + Flows + Lifecycle + Send + Sync + 'static
{
}

//! Reads flow misses from the ring buffer as they come (tokio `AsyncFd` on its fd), records each
//! with the domain (its captured packet waits there for the flow) and publishes it.

use std::{sync::Arc, time::Duration};

use tokio::io::unix::AsyncFd;
use tracing::{info, warn};

use super::Hub;
use crate::{
    dataplane::{Dataplane, FlowMiss, FlowMissReader},
    domain::Domain,
};

/// Spawns the reader; it runs until the runtime stops.
pub fn spawn_reader<D: Dataplane>(
    reader: FlowMissReader,
    domain: Arc<Domain<D>>,
    hub: Arc<Hub<FlowMiss>>,
) -> std::io::Result<()> {
    // SAFETY: the reader owns the ring buffer's fd and keeps it open for as long as the AsyncFd
    // (which owns the reader) exists.
    let mut fd = unsafe { AsyncFd::register(reader) }.map_err(|e| e.into_parts().1)?;
    tokio::spawn(async move {
        loop {
            let mut guard = match fd.readable_mut().await {
                Ok(g) => g,
                Err(e) => {
                    warn!(error = %e, "flow-miss ring buffer poll failed; flow misses stop");
                    return;
                }
            };
            let mut batch = Vec::new();
            guard.get_inner_mut().drain(|miss| batch.push(miss));
            // Recorded (held frames kept) before anyone hears of them, with one taking of the
            // domain's lock for the whole batch.
            domain.record_misses(&batch);
            for miss in batch {
                hub.publish(miss);
            }
            guard.clear_ready();
        }
    });
    Ok(())
}

/// Pause after an aging pass, in passes' lengths: aging takes at most a tenth of a CPU.
const AGING_DUTY: u32 = 9;

/// Spawns the aging task: every `period`, HOLDs older than `hold_timeout` and flows past their
/// timeouts (`idle_timeout` for those without one of their own) go. A pass walks the whole flow
/// table (~0.1 us per flow, in batches): a pass is followed by a pause of at least nine times
/// its length, so that aging a large table takes at most a tenth of a CPU (at 262,144 flows a
/// timeout is then honoured within about a second of its time, rather than within `period`).
pub fn spawn_aging<D: Dataplane>(
    domain: Arc<Domain<D>>,
    period: Duration,
    hold_timeout: Duration,
    idle_timeout: Duration,
) {
    tokio::spawn(async move {
        loop {
            let started = tokio::time::Instant::now();
            let d = domain.clone();
            match tokio::task::spawn_blocking(move || d.expire_flows(hold_timeout, idle_timeout)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => info!(flows = n, "flows aged out"),
                Ok(Err(e)) => warn!(error = %e, "aging flows failed"),
                Err(e) => warn!(error = %e, "aging task panicked"),
            }
            tokio::time::sleep(period.max(started.elapsed() * AGING_DUTY)).await;
        }
    });
}

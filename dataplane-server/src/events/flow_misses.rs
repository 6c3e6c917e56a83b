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

/// Pause after each page of an aging pass's walk, in the page's lengths: aging takes at most a
/// tenth of a CPU, in slices of a page (~0.2 ms), never a CPU for a whole pass.
const AGING_DUTY: u32 = 9;

/// Spawns the aging task: every `period`, HOLDs older than `hold_timeout` and flows past their
/// timeouts (`idle_timeout` for those without one of their own) go. A pass walks the whole flow
/// table a page at a time (~0.2 us per flow) and pauses after each page for nine times its
/// length, so that aging a large table takes at most a tenth of a CPU and leaves the other
/// nine tenths to misses and decisions at every instant (at 262,144 flows a pass takes about
/// half a second; a timeout is honoured within `period` plus a pass).
pub fn spawn_aging<D: Dataplane>(
    domain: Arc<Domain<D>>,
    period: Duration,
    hold_timeout: Duration,
    idle_timeout: Duration,
) {
    tokio::spawn(async move {
        loop {
            let d = domain.clone();
            let pass = move || {
                d.expire_flows_paced(hold_timeout, idle_timeout, &mut |busy| std::thread::sleep(busy * AGING_DUTY))
            };
            match tokio::task::spawn_blocking(pass).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => info!(flows = n, "flows aged out"),
                Ok(Err(e)) => warn!(error = %e, "aging flows failed"),
                Err(e) => warn!(error = %e, "aging task panicked"),
            }
            tokio::time::sleep(period).await;
        }
    });
}

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
            // Readiness cleared before the drain, never after: the kernel wakes the reader
            // only for a record written where the reader has read up to (adaptive
            // notification), so a record written after the drain but before a later
            // clear_ready would have its wakeup thrown away, and the ones after it would wake
            // no one (the reader still behind it) until something else did.
            guard.clear_ready();
            let mut batch = Vec::new();
            guard.get_inner_mut().drain(|miss| batch.push(miss));
            drop(guard);
            // Recorded (held frames kept) before anyone hears of them, with one taking of the
            // domain's lock for the whole batch.
            domain.record_misses(&batch);
            for miss in batch {
                hub.publish(miss);
            }
        }
    });
    Ok(())
}

/// Pause after each page of an aging pass's walk, in the page's lengths: aging takes at most a
/// tenth of a CPU, in slices of a page (~0.2 ms), never a CPU for a whole pass.
const AGING_DUTY: u32 = 9;

/// The longest between two walks of the whole table: how late, at most, an eviction of a flow
/// not yet due is reported, or a HOLD of a miss the server never read goes.
const WALK_EVERY_MAX: Duration = Duration::from_secs(10);

/// Spawns the aging task. Every `period`, what is due goes without a walk of the table
/// ([`Domain::expire_due`]: HOLDs older than `hold_timeout`, flows past their own timeouts).
/// A walk of the whole table ([`Domain::expire_flows_paced`]) ages flows by the server-wide
/// `idle_timeout` and finds evictions: it runs at the start, then every quarter of
/// `idle_timeout` (so such a flow goes within a quarter of its timeout late), at least every
/// 10 s, at most every `period`. A walk takes a page at a time (~0.2 us per flow) and pauses
/// after each page for nine times its length, so that it takes at most a tenth of a CPU and
/// leaves the other nine tenths to misses and decisions at every instant (at 262,144 flows a
/// walk takes about half a second).
pub fn spawn_aging<D: Dataplane>(
    domain: Arc<Domain<D>>,
    period: Duration,
    hold_timeout: Duration,
    idle_timeout: Duration,
) {
    let walk_every = (idle_timeout / 4).clamp(period, WALK_EVERY_MAX.max(period));
    tokio::spawn(async move {
        let mut walked: Option<tokio::time::Instant> = None;
        loop {
            let d = domain.clone();
            let walk = walked.is_none_or(|t| t.elapsed() >= walk_every);
            if walk {
                walked = Some(tokio::time::Instant::now());
            }
            let pass = move || {
                if walk {
                    d.expire_flows_paced(hold_timeout, idle_timeout, &mut |busy| std::thread::sleep(busy * AGING_DUTY))
                } else {
                    d.expire_due(hold_timeout, idle_timeout)
                }
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

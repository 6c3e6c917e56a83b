//! Reads flow misses from the ring buffer as they come (a thread of its own, waiting in
//! `poll(2)` on the ring's fd), records each with the domain (its captured packet waits there
//! for the flow) and publishes it.
//!
//! Wakeups are moderated (`--flow-miss-gather-us`, 200 by default), as a NIC moderates its
//! interrupts: while misses come faster than [`BUSY_RATE`] a second (measured over the last
//! [`RATE_WINDOW`]), the reader no longer waits in `poll(2)` but sleeps `gather` and reads
//! what came meanwhile, so that under load it wakes for a dozen misses rather than for each
//! (every wakeup is two context switches and, on a busy node, a preemption of whatever forwards
//! packets on that CPU: at 50,000 misses a second, one wakeup each cost a fifth of a CPU). Below
//! that rate (a controller answering misses one at a time, a trickle) each miss is read at once.

use std::{
    os::fd::AsRawFd,
    sync::Arc,
    time::{Duration, Instant},
};

use tracing::{info, warn};

use super::Hub;
use crate::{
    dataplane::{Dataplane, FlowMiss, FlowMissReader},
    domain::Domain,
};

/// Misses per second from which wakeups are moderated.
const BUSY_RATE: u64 = 20_000;
/// Over how long the rate is measured.
const RATE_WINDOW: Duration = Duration::from_millis(2);

/// Spawns the reader thread; it runs as long as the process.
pub fn spawn_reader<D: Dataplane>(
    mut reader: FlowMissReader,
    domain: Arc<Domain<D>>,
    hub: Arc<Hub<FlowMiss>>,
    gather: Duration,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("dp-misses".into()).spawn(move || {
        // Sleeps of `gather` as asked, not 50 us later (the default timer slack).
        // SAFETY: plain prctl on this thread.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000u64, 0u64, 0u64, 0u64) };
        // Misses read since `since`; the rate of the last full window.
        let (mut since, mut count, mut busy) = (Instant::now(), 0u64, false);
        loop {
            if busy && !gather.is_zero() {
                // Under load: one timer wakeup per `gather`, whatever came meanwhile read in
                // one go; no poll, so the ring's own wakeups (one per miss that finds the ring
                // drained) never reach this thread.
                std::thread::sleep(gather);
            } else {
                // Level-triggered: returns at once while unread records are in the ring, so no
                // wakeup can be missed between a drain and the next wait.
                let mut pfd = libc::pollfd { fd: reader.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd for the duration of the call.
                if unsafe { libc::poll(&mut pfd, 1, -1) } < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    warn!(error = %e, "flow-miss ring buffer poll failed; flow misses stop");
                    return;
                }
            }
            let mut batch = Vec::new();
            reader.drain(|miss| batch.push(miss));
            count += batch.len() as u64;
            let elapsed = since.elapsed();
            if elapsed >= RATE_WINDOW {
                busy = count * 1_000_000 >= BUSY_RATE * elapsed.as_micros() as u64;
                (since, count) = (Instant::now(), 0);
            }
            // Recorded (held frames kept) before anyone hears of them, with one taking of the
            // domain's lock for the whole batch.
            domain.record_misses(&batch);
            for miss in batch {
                hub.publish(miss);
            }
        }
    })?;
    Ok(())
}

/// Pause after each page of an aging pass's walk, in the page's lengths: aging takes at most a
/// tenth of a CPU, in slices of a page (~0.2 ms), never a CPU for a whole pass.
const AGING_DUTY: u32 = 9;

/// The longest between two walks of the whole table: how late, at most, an eviction of a flow
/// not yet due is reported, or a HOLD of a miss the server never read goes.
const WALK_EVERY_MAX: Duration = Duration::from_secs(30);

/// Spawns the aging task. Every `period`, what is due goes without a walk of the table
/// ([`Domain::expire_due`]: HOLDs older than `hold_timeout`, flows past their own timeouts).
/// A walk of the whole table ([`Domain::expire_flows_paced`]) ages flows by the server-wide
/// `idle_timeout` and finds evictions: it runs at the start, then every quarter of
/// `idle_timeout` (so such a flow goes within a quarter of its timeout late), at least every
/// 30 s, at most every `period`. A walk takes a page at a time (~0.2 us per flow) and pauses
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

//! Flow setup through a controller session: a flow miss (BPF_PROG_TEST_RUN of the server's own
//! `dp_xdp_ingress` over its pins) -> HOLD + ring buffer -> server -> `MissBatch` on the session
//! stream -> a Rust controller -> `Decisions` (by request id) on the same stream -> flows in the
//! kernel, held first packets re-injected -> `DecisionResult`. Next to it, in the same run, the
//! same controller deciding as many flows by key with no miss involved.
//!
//! Latency: test run issued -> miss received by the controller, for isolated misses (one
//! outstanding at a time) and under a paced sustained rate.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use controller_client::{pb, stream_channel::StreamChannel, Client};
use integration::Harness;
use pb::session_response::Kind;

/// A UDP datagram of flow `n` (distinct destination and source port), for the loopback MAC.
pub fn frame(n: u32) -> Vec<u8> {
    integration::udp_frame(IpAddr::V4(Ipv4Addr::from(0xcb00_7100u32 | (n & 0xff))), (n >> 8) as u16 + 1024, 53)
}

pub fn key(n: u32) -> pb::FlowKey {
    pb::FlowKey {
        vrf: 0,
        src: "192.0.2.10".into(),
        dst: Ipv4Addr::from(0xcb00_7100u32 | (n & 0xff)).to_string(),
        protocol: 17,
        src_port: (n >> 8) + 1024,
        dst_port: 53,
    }
}

/// Flow index from a miss key.
fn index(k: &pb::FlowKey) -> Option<u32> {
    let dst: Ipv4Addr = k.dst.parse().ok()?;
    Some(((k.src_port - 1024) << 8) | (u32::from(dst) & 0xff))
}

fn forward_request(request_id: u64) -> pb::Flow {
    pb::Flow { request_id, action: pb::FlowAction::Forward as i32, next_hop: 1, ..Default::default() }
}

/// Packets next hop 1 has sent (held packets re-injected through their new flow count there).
pub async fn nexthop_packets(client: &mut Client) -> Result<u64> {
    let r = client.routing.list_next_hops(pb::ListNextHopsRequest {}).await?.into_inner();
    Ok(r.next_hops.iter().find(|n| n.id == 1).map(|n| n.packets).unwrap_or(0))
}

/// What one run of the loop did.
pub struct LoopRun {
    /// Flow setups per second: first miss sent -> last decision applied.
    pub rate: f64,
    pub batches: u64,
}

/// A controller on `session` answering every miss batch with one decision batch, until `n`
/// decisions were applied; then returns the instant of the last one and the number of batches.
fn spawn_controller(
    mut session: StreamChannel,
    n: u64,
    done: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Result<(Instant, u64, StreamChannel)>> {
    tokio::spawn(async move {
        let (mut applied, mut batches, mut id) = (0u64, 0u64, 0u64);
        while applied < n {
            match session.next().await? {
                Some(Kind::Misses(b)) => {
                    id += 1;
                    batches += 1;
                    let flows = b.misses.iter().map(|m| forward_request(m.request_id)).collect();
                    session.sender.decide(id, flows, pb::Atomicity::ContinueOnError).await?;
                }
                Some(Kind::DecisionResult(r)) => {
                    ensure!(r.failed.is_empty(), "decisions failed: {:?}", &r.failed[..r.failed.len().min(3)]);
                    applied += u64::from(r.applied);
                    done.store(applied, Ordering::Release);
                }
                // Removals lost are fine here (the LRU evicts earlier runs' flows by the thousand).
                Some(Kind::Lost(l)) if l.misses > 0 => bail!("the controller lost {} misses", l.misses),
                Some(Kind::Error(e)) => bail!("stream error: {e:?}"),
                Some(_) => {}
                None => bail!("the session ended"),
            }
        }
        Ok((Instant::now(), batches, session))
    })
}

/// Misses the loop's generator lets be outstanding (sent, not yet decided): below what the
/// 4 MiB flow-miss ring holds (about 2,600 whole-capture events), so that the loop measures the
/// rate the server and the controller sustain rather than what a full ring drops.
pub const WINDOW: u64 = 2048;

/// The whole loop for flows `base..base + n`: misses sent as fast as this thread can with at
/// most [`WINDOW`] outstanding, answered by a controller on `session`.
pub fn run_loop(
    rt: &tokio::runtime::Runtime,
    program: &Harness,
    session: StreamChannel,
    base: u32,
    n: u32,
) -> Result<(LoopRun, StreamChannel)> {
    let done = Arc::new(AtomicU64::new(0));
    let controller = {
        let _in_runtime = rt.enter();
        spawn_controller(session, u64::from(n), done.clone())
    };
    let start = Instant::now();
    for i in 0..n {
        while u64::from(i) >= done.load(Ordering::Acquire) + WINDOW {
            ensure!(start.elapsed() < Duration::from_secs(60), "flow setups stalled at {i} of {n}");
            std::thread::yield_now();
        }
        program.try_run(&frame(base + i))?;
    }
    let (end, batches, session) = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(120), controller).await })
        .context("flow setups timed out")???;
    Ok((LoopRun { rate: f64::from(n) / end.duration_since(start).as_secs_f64(), batches }, session))
}

/// Baseline: the same controller deciding flows `base..base + n` by key, no miss involved, in
/// batches of `batch`, pipelined as the loop's are (every batch sent, then the results read).
pub fn run_install_alone(
    rt: &tokio::runtime::Runtime,
    mut session: StreamChannel,
    base: u32,
    n: u32,
    batch: usize,
) -> Result<(f64, StreamChannel)> {
    rt.block_on(async move {
        let flows: Vec<pb::Flow> = (0..n)
            .map(|i| pb::Flow {
                key: Some(key(base + i)),
                action: pb::FlowAction::Forward as i32,
                next_hop: 1,
                ..Default::default()
            })
            .collect();
        let start = Instant::now();
        let sender = session.sender.clone();
        let chunks: Vec<Vec<pb::Flow>> = flows.chunks(batch.max(1)).map(<[pb::Flow]>::to_vec).collect();
        let writer = tokio::spawn(async move {
            for (id, c) in chunks.into_iter().enumerate() {
                sender.decide(id as u64, c, pb::Atomicity::ContinueOnError).await?;
            }
            anyhow::Ok(())
        });
        let mut applied = 0u64;
        while applied < u64::from(n) {
            match session.next().await? {
                Some(Kind::DecisionResult(r)) => {
                    ensure!(r.failed.is_empty(), "{:?}", r.failed.first());
                    applied += u64::from(r.applied);
                }
                Some(Kind::Error(e)) => bail!("{e:?}"),
                Some(_) => {}
                None => bail!("the session ended"),
            }
        }
        writer.await??;
        Ok((f64::from(n) / start.elapsed().as_secs_f64(), session))
    })
}

/// Misses sent back to back at each tick of the paced generator.
const PACE_BURST: u32 = 10;

/// Miss-to-controller latency, microseconds: `n` misses (flows from `base`), one at a time
/// (`pps` None: the next is sent once the previous arrived) or paced at `pps`. Every miss is
/// answered (DROP by request id) so HOLDs do not pile up.
pub fn latency(
    rt: &tokio::runtime::Runtime,
    program: &Harness,
    session: StreamChannel,
    base: u32,
    n: u32,
    pps: Option<u32>,
) -> Result<(Vec<f64>, StreamChannel)> {
    let sent: Arc<Mutex<HashMap<u32, Instant>>> = Arc::default();
    let received = Arc::new(AtomicU64::new(0));
    // Isolated misses: the generator sleeps until the previous one arrived (no spinning core).
    let (arrived_tx, arrived_rx) = std::sync::mpsc::channel::<()>();
    let (s2, r2) = (sent.clone(), received.clone());
    let observer = {
        let _in_runtime = rt.enter();
        tokio::spawn(async move {
            let mut session = session;
            let mut lat = Vec::with_capacity(n as usize);
            let mut id = 0;
            while lat.len() < n as usize {
                // A miss the kernel could not report (ring full) never comes: stop waiting 2 s
                // after the last one that did.
                let next = match tokio::time::timeout(Duration::from_secs(2), session.next()).await {
                    Ok(r) => r?,
                    Err(_) => break,
                };
                match next {
                    Some(Kind::Misses(b)) => {
                        let at = Instant::now();
                        let mut flows = Vec::with_capacity(b.misses.len());
                        {
                            let sent = s2.lock().unwrap();
                            for m in &b.misses {
                                let i = m.key.as_ref().and_then(index).context("miss key")?;
                                let t = *sent.get(&i).context("an event for a flow never sent")?;
                                lat.push(at.duration_since(t).as_secs_f64() * 1e6);
                                flows.push(pb::Flow {
                                    request_id: m.request_id,
                                    action: pb::FlowAction::Drop as i32,
                                    ..Default::default()
                                });
                            }
                        }
                        r2.fetch_add(b.misses.len() as u64, Ordering::Release);
                        let _ = arrived_tx.send(());
                        id += 1;
                        session.sender.decide(id, flows, pb::Atomicity::ContinueOnError).await?;
                    }
                    Some(Kind::Lost(l)) if l.misses > 0 => bail!("lost {} misses", l.misses),
                    Some(_) => {}
                    None => bail!("the session ended"),
                }
            }
            anyhow::Ok((lat, session))
        })
    };
    let start = Instant::now();
    for i in 0..n {
        match pps {
            Some(pps) => {
                // Paced in bursts of PACE_BURST every PACE_BURST / pps seconds: slept for most of
                // each gap (a timer wakes ~50 us late), spun for the rest, so the generator does
                // not hold a core of the two.
                if i % PACE_BURST == 0 {
                    let due = start + Duration::from_secs_f64(f64::from(i) / f64::from(pps));
                    let now = Instant::now();
                    if due > now + Duration::from_micros(80) {
                        std::thread::sleep(due - now - Duration::from_micros(60));
                    }
                    while Instant::now() < due {
                        std::hint::spin_loop();
                    }
                }
            }
            None => {
                // (Isolated misses never meet a full ring: each is the only one outstanding.)
                while received.load(Ordering::Acquire) < u64::from(i) {
                    arrived_rx
                        .recv_timeout(Duration::from_secs(5))
                        .with_context(|| format!("miss {i} not received within 5 s"))?;
                }
            }
        }
        sent.lock().unwrap().insert(base + i, Instant::now());
        program.try_run(&frame(base + i))?;
    }
    let (lat, session) = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(120), observer).await })
        .context("latency timed out")???;
    Ok((lat, session))
}

/// Flow setups per second with the Python controller of `integration/clients/python` answering
/// (its own session, election id `election_id`: it becomes the primary): misses for flows
/// `base..base + n` sent as fast as this thread can with at most [`WINDOW`] held at once (read
/// from `GetStatus.held_misses`), timed from the first miss to the controller's report that it
/// answered the last one. Its start (stub generation, arbitration) is not timed.
pub fn python_rate(
    rt: &tokio::runtime::Runtime,
    program: &Harness,
    client: &mut Client,
    socket: &std::path::Path,
    base: u32,
    n: u32,
    election_id: u128,
) -> Result<f64> {
    use std::io::BufRead;
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../integration/clients/python/flow_controller.py");
    let mut child = std::process::Command::new("python3")
        .args([
            script.to_str().context("script path")?,
            socket.to_str().context("socket path")?,
            "1",
            &n.to_string(),
            &election_id.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting the Python controller")?;
    let mut out = std::io::BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    ensure!(line.trim() == "ready", "the Python controller did not start: {line:?}");
    let start = Instant::now();
    for i in 0..n {
        if i % 256 == 0 {
            loop {
                let held = rt.block_on(client.system.get_status(pb::GetStatusRequest {}))?.into_inner().held_misses;
                if held < WINDOW {
                    break;
                }
                ensure!(start.elapsed() < Duration::from_secs(60), "the Python controller stalled at {i} of {n}");
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        program.try_run(&frame(base + i))?;
    }
    line.clear();
    out.read_line(&mut line)?;
    let elapsed = start.elapsed();
    let status = child.wait()?;
    ensure!(status.success(), "the Python controller failed: {status}");
    let v: serde_json::Value = serde_json::from_str(line.trim()).context("the Python controller's summary")?;
    let answered = v["misses"].as_array().map_or(0, Vec::len);
    ensure!(answered == n as usize, "the Python controller answered {answered} of {n}");
    Ok(f64::from(n) / elapsed.as_secs_f64())
}

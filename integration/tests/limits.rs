//! Limits of a real server (`--max-subscribers`, `--max-concurrent-calls`): a subscription past
//! the cap of its kind and a call past the calls in flight are refused with RESOURCE_EXHAUSTED
//! naming the flag, other kinds keep their own count, a slot comes back when its stream or call
//! ends, and health checks always get through.

use std::time::{Duration, Instant};

use controller_client::{pb, Client};
use integration::{Netns, Server};

async fn healthy(c: &Client) {
    let t = Instant::now();
    let h = c
        .health()
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .expect("health is never limited")
        .into_inner();
    assert_eq!(h.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    assert!(t.elapsed() < Duration::from_millis(500), "health took {:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_subscribers_capped_per_kind_slot_back_when_a_stream_ends() {
    let ns = Netns::new("dls-").unwrap();
    let server = Server::start_with(&ns, &["--max-subscribers", "2"]).unwrap();
    let mut c = server.client().await.unwrap();
    let watch = || pb::WatchStatsRequest { interval_ms: 1000, ..Default::default() };
    let a = c.telemetry.watch_stats(watch()).await.unwrap().into_inner();
    let _b = c.telemetry.watch_stats(watch()).await.unwrap().into_inner();
    let e = c.telemetry.watch_stats(watch()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("--max-subscribers") && e.message().contains("WatchStats"), "{}", e.message());
    // Another kind counts on its own.
    let _m = c.flows.subscribe_flow_misses(pb::SubscribeFlowMissesRequest::default()).await.unwrap();
    let _n = c.events.subscribe_netlink_events(pb::SubscribeNetlinkEventsRequest::default()).await.unwrap();
    healthy(&c).await;
    // A watch that goes gives its slot back.
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match c.telemetry.watch_stats(watch()).await {
            Ok(_) => break,
            Err(e) if e.code() == tonic::Code::ResourceExhausted && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("the slot never came back: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_calls_in_flight_capped_health_answers_slot_back_after() {
    let ns = Netns::new("dlc-").unwrap();
    let server = Server::start_with(&ns, &["--max-concurrent-calls", "1"]).unwrap();
    let mut c = server.client().await.unwrap();
    let nh = pb::NextHop { id: 1, kind: Some(pb::next_hop::Kind::Discard(pb::Discard {})), ..Default::default() };
    c.routing.add_next_hops(pb::AddNextHopsRequest { next_hops: vec![nh], ..Default::default() }).await.unwrap();
    // A long call: 300,000 routes in one batch.
    let routes: Vec<pb::Route> = (0..300_000u32)
        .map(|i| pb::Route {
            vrf: 0,
            prefix: format!("{}.{}.{}.0/24", 11 + (i >> 16), (i >> 8) & 0xff, i & 0xff),
            next_hop: 1,
        })
        .collect();
    let mut slow = c.clone();
    let big =
        tokio::spawn(
            async move { slow.routing.add_routes(pb::AddRoutesRequest { routes, ..Default::default() }).await },
        );
    // While it runs, another call is refused; health is not. (From a connection of its own:
    // on the batch's, a call would wait behind the batch's 10 MB of request.)
    let mut probe = server.client().await.unwrap();
    let mut refused = None;
    while !big.is_finished() {
        match probe.routing.list_vrfs(pb::ListVrfsRequest {}).await {
            Err(e) if e.code() == tonic::Code::ResourceExhausted => {
                refused = Some(e);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    let Some(e) = refused else {
        panic!("no call refused while the batch was in flight: the batch gave {:?}", big.await.unwrap().map(|_| ()));
    };
    assert!(e.message().contains("--max-concurrent-calls"), "{}", e.message());
    healthy(&probe).await;
    big.await.unwrap().expect("the long call itself completes");
    c.routing.list_vrfs(pb::ListVrfsRequest {}).await.expect("the slot is back once it ended");
}

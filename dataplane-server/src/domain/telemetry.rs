//! Counter samples for streamed telemetry (`Telemetry.WatchStats`): one reading of every
//! interface's and next hop's counters, and the difference of two readings.

use std::time::Instant;

use dataplane_common::{InterfaceStats, NextHopStats};

use super::{Dataplane, Domain, DomainError, InterfaceName};

/// One reading of the counters.
#[derive(Clone, Debug)]
pub struct StatsSample {
    pub at: Instant,
    pub interfaces: Vec<(InterfaceName, InterfaceStats)>,
    pub nexthops: Vec<(u32, NextHopStats)>,
}

impl StatsSample {
    /// What changed from `earlier` to `self`: counters of an interface or next hop matched by
    /// name or id, taken whole where `earlier` did not have it (attached, or added, since). A
    /// counter lower than before (an interface detached and attached again in between) counts
    /// from zero, not as a wrap.
    pub fn since(&self, earlier: &StatsSample) -> StatsSample {
        let sub = |now: u64, then: u64| if now >= then { now - then } else { now };
        let interfaces = self
            .interfaces
            .iter()
            .map(|(name, now)| {
                let then = earlier.interfaces.iter().find(|(n, _)| n == name).map(|(_, s)| *s);
                let d = match then {
                    Some(t) => {
                        let mut d = InterfaceStats {
                            rx_packets: sub(now.rx_packets, t.rx_packets),
                            rx_bytes: sub(now.rx_bytes, t.rx_bytes),
                            tx_packets: sub(now.tx_packets, t.tx_packets),
                            tx_bytes: sub(now.tx_bytes, t.tx_bytes),
                            ..InterfaceStats::ZERO
                        };
                        for (i, r) in d.reasons.iter_mut().enumerate() {
                            *r = sub(now.reasons[i], t.reasons[i]);
                        }
                        d
                    }
                    None => *now,
                };
                (name.clone(), d)
            })
            .collect();
        let nexthops = self
            .nexthops
            .iter()
            .map(|(id, now)| {
                let d = match earlier.nexthops.iter().find(|(i, _)| i == id) {
                    Some((_, t)) => {
                        NextHopStats { packets: sub(now.packets, t.packets), bytes: sub(now.bytes, t.bytes) }
                    }
                    None => *now,
                };
                (*id, d)
            })
            .collect();
        StatsSample { at: self.at, interfaces, nexthops }
    }
}

impl<D: Dataplane> Domain<D> {
    /// Reads the counters of every attached interface (or of `interface`: NOT_FOUND unless
    /// attached) and of every next hop.
    pub fn stats_sample(&self, interface: Option<&InterfaceName>) -> Result<StatsSample, DomainError> {
        let interfaces = self.list_interfaces(interface)?.into_iter().map(|v| (v.name, v.stats)).collect();
        let nexthops = self.list_nexthops()?.into_iter().map(|n| (n.id, n.stats)).collect();
        Ok(StatsSample { at: Instant::now(), interfaces, nexthops })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> InterfaceName {
        InterfaceName::parse("name", s).unwrap()
    }

    fn iface(rx: u64, forwarded: u64) -> InterfaceStats {
        let mut s = InterfaceStats { rx_packets: rx, rx_bytes: rx * 100, ..InterfaceStats::ZERO };
        s.reasons[0] = forwarded;
        s
    }

    #[test]
    fn stats_since_subtracts_matched_keeps_new_and_restarts_lowered_counters() {
        let at = Instant::now();
        let earlier = StatsSample {
            at,
            interfaces: vec![(name("a"), iface(10, 7)), (name("b"), iface(50, 50))],
            nexthops: vec![(1, NextHopStats { packets: 5, bytes: 500 })],
        };
        let now = StatsSample {
            at,
            interfaces: vec![(name("a"), iface(25, 20)), (name("b"), iface(3, 3)), (name("c"), iface(4, 1))],
            nexthops: vec![(1, NextHopStats { packets: 9, bytes: 900 }), (2, NextHopStats { packets: 1, bytes: 60 })],
        };
        let d = now.since(&earlier);
        let got: Vec<_> =
            d.interfaces.iter().map(|(n, s)| (n.to_string(), s.rx_packets, s.rx_bytes, s.reasons[0])).collect();
        assert_eq!(
            got,
            vec![("a".into(), 15, 1500, 13), ("b".into(), 3, 300, 3), ("c".into(), 4, 400, 1)],
            "a: the difference; b: counted again from zero (re-attached); c: new, whole"
        );
        let nh: Vec<_> = d.nexthops.iter().map(|(i, s)| (*i, s.packets, s.bytes)).collect();
        assert_eq!(nh, vec![(1, 4, 400), (2, 1, 60)]);
    }
}

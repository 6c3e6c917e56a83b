//! The fake's NextHops: Next hops by slot.

use super::*;

impl NextHops for FakeDataplane {
    fn set_nexthop(&self, slot: u32, nh: &NextHopParams, _fresh: bool) -> Result<(), DataplaneError> {
        self.write("set_nexthop")?;
        self.nexthops.lock().unwrap().insert(slot, nh.clone());
        Ok(())
    }

    fn clear_nexthop(&self, slot: u32) -> Result<(), DataplaneError> {
        self.write("clear_nexthop")?;
        self.nexthops.lock().unwrap().remove(&slot);
        Ok(())
    }

    fn nexthop_stats(&self, _slot: u32) -> Result<NextHopStats, DataplaneError> {
        Ok(NextHopStats::default())
    }

    fn kernel_nexthops(&self) -> Result<Vec<(u32, NextHopParams)>, DataplaneError> {
        Ok(self.nexthops.lock().unwrap().iter().map(|(s, p)| (*s, p.clone())).collect())
    }
}

//! The fake's Routes: The tries as one (VRF, prefix) -> slot map, and the IPv4 route records.

use super::*;

impl Routes for FakeDataplane {
    fn insert_route(&self, vrf: u32, prefix: &Prefix, nexthop_slot: u32) -> Result<(), DataplaneError> {
        self.write("insert_route")?;
        if self.route_inserts_left.fetch_sub(1, Ordering::SeqCst) == 0 {
            return Err(DataplaneError::SlotOutOfRange { map: "ROUTES_V4", slot: 0, max: 0 });
        }
        self.routes.lock().unwrap().insert((vrf, *prefix), nexthop_slot);
        Ok(())
    }

    fn remove_route(&self, vrf: u32, prefix: &Prefix) -> Result<(), DataplaneError> {
        self.write("remove_route")?;
        self.routes.lock().unwrap().remove(&(vrf, *prefix));
        Ok(())
    }

    fn lookup_route(&self, vrf: u32, addr: IpAddr) -> Result<Option<RouteMatch>, DataplaneError> {
        if let (IpAddr::V4(a), Some(&root)) = (addr, self.fib4_roots.lock().unwrap().get(&vrf)) {
            let pool = self.fib4_pool.lock().unwrap();
            let found = crate::dataplane::fib4::walk(root, u32::from(a), |c, i| pool[c as usize][i]);
            return Ok(found.map(|(prefix_len, nexthop_slot)| RouteMatch { prefix_len, nexthop_slot }));
        }
        let routes = self.routes.lock().unwrap();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        Ok((0..=max).rev().find_map(|len| {
            routes
                .get(&(vrf, Prefix::containing(addr, len)))
                .map(|&nexthop_slot| RouteMatch { prefix_len: len, nexthop_slot })
        }))
    }

    fn dump_routes(&self) -> Result<Vec<(u32, Prefix, u32)>, DataplaneError> {
        Ok(self.routes())
    }

    fn route4_capacity(&self) -> u32 {
        dataplane_common::MAX_ROUTES
    }

    fn route4_reserve(&self, slots: u32) -> Result<(), DataplaneError> {
        self.write("route4_reserve")?;
        self.records_mark.store(i64::from(slots), Ordering::SeqCst);
        Ok(())
    }

    fn route4_store(&self, records: &[(u32, dataplane_common::RouteRecord4)]) -> Result<(), DataplaneError> {
        self.write("route4_store")?;
        let mark = self.records_mark.load(Ordering::SeqCst);
        let mut map = self.records.lock().unwrap();
        for (slot, r) in records {
            assert!(i64::from(*slot) < mark, "record {slot} written above the high-water mark {mark}");
            map.insert(*slot, *r);
        }
        Ok(())
    }

    fn route4_clear(&self, slots: &[u32]) -> Result<(), DataplaneError> {
        self.write("route4_clear")?;
        let mut map = self.records.lock().unwrap();
        for slot in slots {
            map.remove(slot);
        }
        Ok(())
    }

    fn route4_records(&self) -> Result<Vec<(u32, dataplane_common::RouteRecord4)>, DataplaneError> {
        Ok(self.records.lock().unwrap().iter().map(|(s, r)| (*s, *r)).collect())
    }
}

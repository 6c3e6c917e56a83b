//! The fake's Fib4: The IPv4 flat tables' pool and roots.

use super::*;

impl Fib4 for FakeDataplane {
    fn fib4_capacity(&self) -> u32 {
        self.fib4_pool.lock().unwrap().len() as u32
    }

    fn fib4_store(&self, chunk: u32, first: usize, values: &[u32]) -> Result<(), DataplaneError> {
        self.write("fib4_store")?;
        let mut pool = self.fib4_pool.lock().unwrap();
        let c = pool.get_mut(chunk as usize).ok_or(DataplaneError::SlotOutOfRange {
            map: names::FIB4_CHUNKS,
            slot: chunk,
            max: 0,
        })?;
        c[first..first + values.len()].copy_from_slice(values);
        Ok(())
    }

    fn fib4_set_root(&self, vrf: u32, root: u32) -> Result<(), DataplaneError> {
        self.write("fib4_set_root")?;
        let mut roots = self.fib4_roots.lock().unwrap();
        if root == 0 {
            roots.remove(&vrf);
        } else {
            roots.insert(vrf, root);
        }
        Ok(())
    }

    fn fib4_roots(&self, vrfs: &[u32]) -> Result<Vec<(u32, u32)>, DataplaneError> {
        let roots = self.fib4_roots.lock().unwrap();
        Ok(vrfs.iter().filter_map(|v| roots.get(v).map(|r| (*v, *r))).collect())
    }

    fn fib4_load(&self, chunk: u32) -> Result<dataplane_common::route::fib4::Chunk, DataplaneError> {
        self.fib4_pool.lock().unwrap().get(chunk as usize).copied().ok_or(DataplaneError::SlotOutOfRange {
            map: names::FIB4_CHUNKS,
            slot: chunk,
            max: 0,
        })
    }
}

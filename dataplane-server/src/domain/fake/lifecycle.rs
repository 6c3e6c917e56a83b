//! The fake's Lifecycle: Programs, maps, generation and grace periods.

use super::*;

impl Lifecycle for FakeDataplane {
    fn upgrade(&self, _object: Option<&[u8]>) -> Result<Vec<ProgramStatus>, DataplaneError> {
        self.programs()
    }

    fn reset(&self) {
        self.attached.lock().unwrap().clear();
        self.routes.lock().unwrap().clear();
        self.nexthops.lock().unwrap().clear();
    }

    fn pins_id(&self) -> Result<u64, DataplaneError> {
        Ok(self.pins_id.load(Ordering::SeqCst) as u64)
    }

    fn programs_object(&self) -> Option<u64> {
        None
    }

    fn programs(&self) -> Result<Vec<ProgramStatus>, DataplaneError> {
        Ok(vec![])
    }

    fn maps(&self) -> Result<Vec<MapStatus>, DataplaneError> {
        let keys = self.attached.lock().unwrap().len() as u64;
        Ok(names::ALL
            .iter()
            .map(|name| MapStatus {
                name,
                kind: "fake".into(),
                kernel_id: 0,
                max_entries: dataplane_common::MAX_INTERFACES,
                key_size: 4,
                value_size: 4,
                keys: (*name == names::INTERFACES).then_some(keys),
                pin_path: String::new(),
            })
            .collect())
    }

    fn pin_root(&self) -> String {
        "/fake".into()
    }

    fn set_generation(&self, generation: u64) -> Result<(), DataplaneError> {
        self.write("set_generation")?;
        self.generation.store(generation as i64, Ordering::SeqCst);
        Ok(())
    }

    fn generation(&self) -> Result<u64, DataplaneError> {
        Ok(self.generation.load(Ordering::SeqCst) as u64)
    }

    fn wait_for_readers(&self) -> Result<(), DataplaneError> {
        self.readers_waited.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn check_pins(&self) -> Result<Vec<PinRepair>, DataplaneError> {
        self.pin_checks.fetch_add(1, Ordering::SeqCst);
        Ok(Vec::new())
    }

    fn pin_health(&self) -> PinHealth {
        self.pin_health.lock().unwrap().clone()
    }
}

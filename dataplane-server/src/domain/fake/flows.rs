//! The fake's Flows: Flow tables, flow config, HOLD accounting, re-injections.

use super::*;

impl Flows for FakeDataplane {
    fn set_flow_config(&self, slot: u32, cfg: &dataplane_common::flow::FlowConfig) -> Result<(), DataplaneError> {
        self.write("set_flow_config")?;
        self.flow_config.lock().unwrap().insert(slot, *cfg);
        Ok(())
    }

    fn flow_config(&self, slot: u32) -> Result<dataplane_common::flow::FlowConfig, DataplaneError> {
        Ok(self.flow_config.lock().unwrap().get(&slot).copied().unwrap_or(dataplane_common::flow::FlowConfig {
            enabled: 0,
            miss_forward: 0,
            punt_rate: 0,
            punt_burst: 0,
            hold_cap: 0,
            _pad: 0,
        }))
    }

    fn put_flow(
        &self,
        key: &crate::dataplane::FlowKey,
        value: &dataplane_common::flow::FlowValue,
    ) -> Result<(), DataplaneError> {
        self.write("put_flow")?;
        self.flows.lock().unwrap().insert(*key, *value);
        Ok(())
    }

    fn get_flow(
        &self,
        key: &crate::dataplane::FlowKey,
    ) -> Result<Option<dataplane_common::flow::FlowValue>, DataplaneError> {
        Ok(self.flows.lock().unwrap().get(key).copied())
    }

    fn remove_flow(&self, key: &crate::dataplane::FlowKey) -> Result<(), DataplaneError> {
        self.write("remove_flow")?;
        self.flows.lock().unwrap().remove(key);
        Ok(())
    }

    fn flows(&self) -> Result<Vec<(crate::dataplane::FlowKey, dataplane_common::flow::FlowValue)>, DataplaneError> {
        Ok(self.flows.lock().unwrap().iter().map(|(k, v)| (*k, *v)).collect())
    }

    fn set_holds_resolved(&self, resolved: u64) -> Result<(), DataplaneError> {
        self.write("set_holds_resolved")?;
        self.holds_resolved.store(resolved as i64, Ordering::SeqCst);
        Ok(())
    }

    fn holds_created(&self) -> Result<u64, DataplaneError> {
        Ok(0)
    }

    fn reinject(&self, ifindex: u32, frame: &[u8]) -> Result<u32, DataplaneError> {
        self.reinjected.lock().unwrap().push((ifindex, frame.to_vec()));
        Ok(4)
    }

    fn reinject_via(&self, ifindex: u32, _egress: u32, frame: &[u8]) -> Result<u32, DataplaneError> {
        self.reinject(ifindex, frame)
    }

    fn transmit(&self, ifindex: u32, frame: &[u8]) -> Result<(), DataplaneError> {
        self.transmitted.lock().unwrap().push((ifindex, frame.to_vec()));
        Ok(())
    }
}

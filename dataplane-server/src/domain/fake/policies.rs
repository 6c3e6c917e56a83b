//! The fake's Policies: Policy tables written and attachment words.

use super::*;

impl Policies for FakeDataplane {
    fn write_policy(&self, image: &crate::dataplane::PolicyImage) -> Result<(), DataplaneError> {
        self.write("write_policy")?;
        self.policy_tables.lock().unwrap().insert(image.table, image.clone());
        Ok(())
    }

    fn clear_policy(&self, image: &crate::dataplane::PolicyImage) -> Result<(), DataplaneError> {
        self.write("clear_policy")?;
        self.policy_tables.lock().unwrap().remove(&image.table);
        Ok(())
    }

    fn set_policy_attachment(&self, slot: u32, direction: u32, word: u32) -> Result<(), DataplaneError> {
        self.write("set_policy_attachment")?;
        self.policy_attach.lock().unwrap().insert((slot, direction), word);
        Ok(())
    }

    fn rule_stats(&self, _first: u32, count: u32) -> Result<Vec<dataplane_common::policy::RuleStats>, DataplaneError> {
        Ok(vec![Default::default(); count as usize])
    }

    fn policy_attachments(&self) -> Result<Vec<(u32, u32, u32)>, DataplaneError> {
        Ok(self
            .policy_attach
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, w)| **w != 0)
            .map(|((s, d), w)| (*s, *d, *w))
            .collect())
    }

    fn read_policy(&self, table: u32) -> Result<Option<crate::dataplane::PolicyImage>, DataplaneError> {
        Ok(self.policy_tables.lock().unwrap().get(&table).cloned())
    }

    fn purge_policy_tables(&self, keep: &std::collections::BTreeSet<u32>) -> Result<Vec<u32>, DataplaneError> {
        let mut tables = self.policy_tables.lock().unwrap();
        let gone: Vec<u32> = tables.keys().filter(|t| !keep.contains(t)).copied().collect();
        if !gone.is_empty() {
            self.write("purge_policy_tables")?;
        }
        tables.retain(|t, _| keep.contains(t));
        Ok(gone)
    }
}

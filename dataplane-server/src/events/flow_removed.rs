//! Flow removals: the domain's removal sink connected to a [`Hub`], which a controller session
//! subscribes to (each removal numbered, a subscriber that falls behind told how many it lost).

use std::sync::Arc;

use super::Hub;
use crate::domain::{Dataplane, Domain, FlowRemoved};

/// Every removal the domain reports from now on is published on `hub`.
pub fn connect<D: Dataplane>(domain: &Domain<D>, hub: Arc<Hub<FlowRemoved>>) {
    // `publish` never blocks; the domain calls the sink without its lock, so the hub may record
    // its sequence floor through the domain.
    domain.set_flow_removed_sink(Arc::new(move |removed| {
        hub.publish(removed);
    }));
}

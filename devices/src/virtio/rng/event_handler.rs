//! How the entropy device's worker reacts to events.

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use log::error;

use super::RngWorker;

/// Event data: the request queue's ioeventfd fired.
pub const QUEUE_EVENT: u32 = 0;

impl MutEventSubscriber for RngWorker {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.data() == QUEUE_EVENT {
            let _ = self.queue().event().read();
            self.process_queue();
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data(
            self.queue().event(),
            QUEUE_EVENT,
            EventSet::IN,
        )) {
            error!("virtio-rng: registering the queue event: {e}");
        }
        // Requests may have been queued before the worker started.
        self.process_queue();
    }
}

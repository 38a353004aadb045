//! How a block queue worker reacts to events.

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use log::error;

use super::BlockWorker;

/// Event data: the queue's ioeventfd fired.
pub const QUEUE_EVENT: u32 = 0;
/// Event data: io_uring completed requests.
pub const COMPLETION_EVENT: u32 = 1;

impl MutEventSubscriber for BlockWorker {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        self.poller.woke();
        let data = events.data();
        if data == QUEUE_EVENT {
            let _ = self.queue().event().read();
        }
        if !self.poll() {
            match data {
                QUEUE_EVENT => {
                    self.process_queue();
                }
                COMPLETION_EVENT => {
                    self.process_completions();
                }
                _ => {}
            }
        }
        self.poller.sleeping();
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data(
            self.queue().event(),
            QUEUE_EVENT,
            EventSet::IN,
        )) {
            error!("virtio-blk: registering the queue event: {e}");
        }
        if let Some(c) = self.completion_event() {
            if let Err(e) = ops.add(Events::with_data(c, COMPLETION_EVENT, EventSet::IN)) {
                error!("virtio-blk: registering the io_uring completion event: {e}");
            }
        }
        self.process_queue();
    }
}

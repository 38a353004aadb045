//! How the network worker reacts to events.

use std::os::fd::AsRawFd;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use log::error;

use super::NetWorker;

/// Event data: the receive queue's ioeventfd (new receive buffers).
pub const RX_QUEUE_EVENT: u32 = 0;
/// Event data: the transmit queue's ioeventfd.
pub const TX_QUEUE_EVENT: u32 = 1;
/// Event data: the tap has frames to read.
pub const TAP_EVENT: u32 = 2;

impl NetWorker {
    fn arm_tap(&mut self, ops: &mut EventOps, want: bool) {
        if want == self.tap_armed {
            return;
        }
        let ev = Events::with_data_raw(self.tap.as_raw_fd(), TAP_EVENT, EventSet::IN);
        let r = if want { ops.add(ev) } else { ops.remove(ev) };
        match r {
            Ok(()) => self.tap_armed = want,
            Err(e) => error!("virtio-net: (un)registering the tap: {e}"),
        }
    }
}

impl MutEventSubscriber for NetWorker {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            TX_QUEUE_EVENT => {
                let _ = self.tx.event().read();
                self.process_tx();
            }
            RX_QUEUE_EVENT => {
                let _ = self.rx.event().read();
                let more = self.process_rx();
                self.arm_tap(ops, more);
            }
            TAP_EVENT => {
                let more = self.process_rx();
                self.arm_tap(ops, more);
            }
            _ => {}
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        for (q, data) in [(&self.rx, RX_QUEUE_EVENT), (&self.tx, TX_QUEUE_EVENT)] {
            if let Err(e) = ops.add(Events::with_data(q.event(), data, EventSet::IN)) {
                error!("virtio-net: registering a queue event: {e}");
            }
        }
        self.process_tx();
        let more = self.process_rx();
        self.arm_tap(ops, more);
    }
}

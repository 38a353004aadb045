//! How the console worker reacts to events.

use std::os::fd::AsRawFd;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use log::error;

use super::ConsoleWorker;

/// Event data: the receive queue's ioeventfd (the guest added input buffers).
pub const RX_EVENT: u32 = 0;
/// Event data: the transmit queue's ioeventfd (the guest wrote output).
pub const TX_EVENT: u32 = 1;
/// Event data: host input is readable.
pub const INPUT_EVENT: u32 = 2;

impl ConsoleWorker {
    fn arm_input(&mut self, ops: &mut EventOps, want: bool) {
        let Some(fd) = self.input.as_ref().map(|f| f.as_raw_fd()) else {
            self.input_armed = false;
            return;
        };
        // At the end of input, unregister before closing: another descriptor of the same file
        // (the device's) would otherwise keep the registration alive and readable forever.
        let want = want && !self.input_ended;
        if want == self.input_armed {
            if self.input_ended {
                self.input = None;
            }
            return;
        }
        let ev = Events::with_data_raw(fd, INPUT_EVENT, EventSet::IN);
        let r = if want { ops.add(ev) } else { ops.remove(ev) };
        match r {
            Ok(()) => self.input_armed = want,
            Err(e) => error!("virtio-console: (un)registering the input: {e}"),
        }
        if self.input_ended {
            self.input = None;
        }
    }
}

impl MutEventSubscriber for ConsoleWorker {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            TX_EVENT => {
                let _ = self.tx.event().read();
                self.process_tx();
            }
            RX_EVENT => {
                let _ = self.rx.event().read();
                let room = self.process_input();
                self.arm_input(ops, room);
            }
            INPUT_EVENT => {
                let room = self.process_input();
                self.arm_input(ops, room);
            }
            _ => {}
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        for (q, data) in [(&self.rx, RX_EVENT), (&self.tx, TX_EVENT)] {
            if let Err(e) = ops.add(Events::with_data(q.event(), data, EventSet::IN)) {
                error!("virtio-console: registering a queue event: {e}");
            }
        }
        self.arm_input(ops, true);
        self.process_tx();
    }
}

//! How the vsock worker reacts to events: its three queues, the listening socket and every
//! connection's host socket (registered only while there is something to wait for).

use std::os::fd::AsRawFd;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use log::error;

use super::VsockWorker;
use super::conn::ConnState;

/// Event data: receive queue (new buffers for the device to fill).
pub const RX_QUEUE_EVENT: u32 = 0;
/// Event data: transmit queue (packets from the guest).
pub const TX_QUEUE_EVENT: u32 = 1;
/// Event data: event queue (buffers for transport events).
pub const EVENT_QUEUE_EVENT: u32 = 2;
/// Event data: a host client is connecting to the listener.
pub const LISTENER_EVENT: u32 = 3;
/// Event data of connection `slot` is `CONN_EVENT_BASE + slot`.
pub const CONN_EVENT_BASE: u32 = 16;

impl VsockWorker {
    /// Brings epoll in line with what each changed connection waits for.
    fn sync_interest(&mut self, ops: &mut EventOps) {
        for c in self.mux.to_close.drain(..) {
            if c.armed_in || c.armed_out {
                let _ = ops.remove(Events::empty_raw(c.stream.as_raw_fd()));
            }
        }
        while let Some(slot) = self.mux.dirty.pop() {
            let Some(Some(c)) = self.mux.conns.get_mut(slot) else {
                continue;
            };
            let want_in = match c.state {
                ConnState::AwaitingConnectLine => true,
                ConnState::Connected => !c.readable,
                _ => false,
            };
            let want_out = !c.pending_out.is_empty();
            if (want_in, want_out) == (c.armed_in, c.armed_out) {
                continue;
            }
            let fd = c.stream.as_raw_fd();
            let mut set = EventSet::empty();
            if want_in {
                set |= EventSet::IN;
            }
            if want_out {
                set |= EventSet::OUT;
            }
            let ev = Events::with_data_raw(fd, CONN_EVENT_BASE + slot as u32, set);
            let was = c.armed_in || c.armed_out;
            let r = match (was, want_in || want_out) {
                (false, true) => ops.add(ev),
                (true, true) => ops.modify(ev),
                (true, false) => ops.remove(ev),
                (false, false) => Ok(()),
            };
            match r {
                Ok(()) => {
                    c.armed_in = want_in;
                    c.armed_out = want_out;
                }
                Err(e) => error!("virtio-vsock: epoll for connection {slot}: {e}"),
            }
        }
    }
}

impl MutEventSubscriber for VsockWorker {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let set = events.event_set();
        match events.data() {
            RX_QUEUE_EVENT => {
                let _ = self.rx.event().read();
                // Room for replies may let held-back guest packets through.
                if self.process_rx() > 0 {
                    self.process_tx();
                }
            }
            TX_QUEUE_EVENT => {
                let _ = self.tx.event().read();
                self.process_tx();
            }
            EVENT_QUEUE_EVENT => {
                let _ = self.events.event().read();
            }
            LISTENER_EVENT => self.mux.accept(),
            d if d >= CONN_EVENT_BASE => {
                let readable = set.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::ERROR);
                let writable = set.contains(EventSet::OUT);
                self.mux
                    .conn_event((d - CONN_EVENT_BASE) as usize, readable, writable);
            }
            _ => {}
        }
        self.process_rx();
        self.sync_interest(ops);
    }

    fn init(&mut self, ops: &mut EventOps) {
        for (q, data) in [
            (&self.rx, RX_QUEUE_EVENT),
            (&self.tx, TX_QUEUE_EVENT),
            (&self.events, EVENT_QUEUE_EVENT),
        ] {
            if let Err(e) = ops.add(Events::with_data(q.event(), data, EventSet::IN)) {
                error!("virtio-vsock: registering a queue event: {e}");
            }
        }
        let l = Events::with_data(&self.mux.listener, LISTENER_EVENT, EventSet::IN);
        if let Err(e) = ops.add(l) {
            error!("virtio-vsock: registering the listener: {e}");
        }
        self.mux.accept();
        self.process_tx();
        self.process_rx();
        self.sync_interest(ops);
    }
}

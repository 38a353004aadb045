//! The vsock worker: guest packets from the transmit queue go to the multiplexer; packets for
//! the guest (control first, then data, read from host sockets straight into the guest's
//! receive buffers) go to the receive queue, one interrupt per batch.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use super::mux::{Mux, NAME};
use super::packet::HDR_LEN;
use crate::virtio::chain::Chain;
use crate::virtio::device::{ActiveQueue, DeviceHealth};
use crate::virtio::iov::{IoVecs, write_bytes};
use crate::virtio::queue::{DeviceQueue, Popped, QueueError};
use crate::virtio::{GuestMem, VirtioInterrupt};

const MAX_SEGMENTS: usize = 64;

/// Serves a vsock device's three queues and its host sockets.
#[derive(Debug)]
pub struct VsockWorker {
    mem: GuestMem,
    pub(super) rx: DeviceQueue,
    pub(super) tx: DeviceQueue,
    pub(super) events: DeviceQueue,
    pub(super) mux: Mux,
    chain: Chain,
    iov: IoVecs,
    interrupt: Arc<dyn VirtioInterrupt>,
    health: Arc<DeviceHealth>,
}

/// What the next receive buffer held.
enum RxBuf {
    Ready(u16, u64),
    Skip,
    None,
}

impl VsockWorker {
    /// A worker for the receive, transmit and event queues.
    pub fn new(
        mem: GuestMem,
        queues: [ActiveQueue; 3],
        features: u64,
        mux: Mux,
        interrupt: Arc<dyn VirtioInterrupt>,
        health: Arc<DeviceHealth>,
    ) -> Self {
        let [rx, tx, ev] = queues;
        Self {
            mem,
            rx: DeviceQueue::new(NAME, rx, features, MAX_SEGMENTS),
            tx: DeviceQueue::new(NAME, tx, features, MAX_SEGMENTS),
            events: DeviceQueue::new(NAME, ev, features, MAX_SEGMENTS),
            mux,
            chain: Chain::with_capacity(MAX_SEGMENTS),
            iov: IoVecs::with_capacity(MAX_SEGMENTS * 2),
            interrupt,
            health,
        }
    }

    /// The multiplexer.
    pub fn mux(&self) -> &Mux {
        &self.mux
    }

    /// Handles every packet the guest sent.
    pub fn process_tx(&mut self) -> usize {
        if self.mux.control_full() {
            // Backpressure: replies wait for receive buffers; the guest's packets wait for them.
            return 0;
        }
        let Self {
            mem,
            tx,
            chain,
            mux,
            interrupt,
            health,
            ..
        } = self;
        tx.drain(mem, chain, interrupt, health, |chain| {
            mux.handle_tx(mem, chain);
            0
        })
    }

    fn fail_rx(&mut self, e: &QueueError) {
        self.rx.fail(e, &self.health, self.interrupt.as_ref());
    }

    fn next_rx_buf(&mut self) -> RxBuf {
        match self.rx.pop(&self.mem, &mut self.chain) {
            Ok(Popped::Empty) => RxBuf::None,
            Ok(Popped::Bad(head, _)) => match self.rx.complete(&self.mem, head, 0) {
                Ok(()) => RxBuf::Skip,
                Err(e) => {
                    self.fail_rx(&e);
                    RxBuf::None
                }
            },
            Ok(Popped::Chain) => {
                let cap = self.chain.writable_len();
                if cap < HDR_LEN as u64 {
                    let head = self.chain.head();
                    return match self.rx.complete(&self.mem, head, 0) {
                        Ok(()) => RxBuf::Skip,
                        Err(e) => {
                            self.fail_rx(&e);
                            RxBuf::None
                        }
                    };
                }
                RxBuf::Ready(self.chain.head(), cap)
            }
            Err(e) => {
                self.fail_rx(&e);
                RxBuf::None
            }
        }
    }

    /// Fills the guest's receive buffers: control packets first, then host data within the
    /// guest's credit. Returns the number of packets delivered.
    pub fn process_rx(&mut self) -> usize {
        let mut sent = 0usize;
        loop {
            if self.rx.is_broken() {
                break;
            }
            let control = self.mux.next_control().copied();
            let ready = if control.is_none() {
                match self.mux.next_ready() {
                    Some(r) => Some(r),
                    None => break,
                }
            } else {
                None
            };
            let (head, cap) = match self.next_rx_buf() {
                RxBuf::Ready(h, c) => (h, c),
                RxBuf::Skip => continue,
                RxBuf::None => break,
            };
            let len = if let Some(h) = control {
                if write_bytes(&*self.mem, self.chain.writable(), 0, &h.to_bytes()).is_err() {
                    0
                } else {
                    self.mux.control.pop_front();
                    HDR_LEN as u32
                }
            } else {
                let Some((slot, credit)) = ready else { break };
                let room = (cap - HDR_LEN as u64).min(u64::from(credit));
                if room == 0 {
                    self.rx.unpop();
                    break;
                }
                let Some(fd) = self.mux.conn(slot).map(|c| c.stream.as_raw_fd()) else {
                    self.rx.unpop();
                    continue;
                };
                self.iov.clear();
                let n = match self.iov.push_range(
                    &self.mem,
                    self.chain.writable(),
                    HDR_LEN as u64,
                    room,
                ) {
                    Ok(()) => {
                        let list = self.iov.as_slice();
                        // SAFETY: the iovecs describe mapped guest memory of the stated lengths.
                        let n =
                            unsafe { libc::readv(fd, list.as_ptr(), list.len() as libc::c_int) };
                        if n < 0 {
                            Err(io::Error::last_os_error())
                        } else {
                            Ok(n as usize)
                        }
                    }
                    Err(e) => Err(io::Error::other(e.to_string())),
                };
                self.iov.clear();
                match n {
                    Ok(0) => {
                        self.rx.unpop();
                        self.mux.host_closed(slot);
                        continue;
                    }
                    Ok(n) => {
                        // n <= room <= 64 KiB.
                        let Some(h) = self.mux.data_sent(slot, n as u32) else {
                            self.rx.unpop();
                            continue;
                        };
                        if write_bytes(&*self.mem, self.chain.writable(), 0, &h.to_bytes()).is_err()
                        {
                            0
                        } else {
                            (HDR_LEN + n) as u32
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.rx.unpop();
                        self.mux.drained(slot);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                        self.rx.unpop();
                        continue;
                    }
                    Err(_) => {
                        self.rx.unpop();
                        self.mux.host_closed(slot);
                        continue;
                    }
                }
            };
            if let Err(e) = self.rx.complete(&self.mem, head, len) {
                self.fail_rx(&e);
                break;
            }
            sent += 1;
        }
        if sent > 0 {
            if let Err(e) = self.rx.signal_used(&self.mem, self.interrupt.as_ref()) {
                self.fail_rx(&e);
            }
        }
        sent
    }
}

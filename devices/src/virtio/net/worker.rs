//! The network worker: transmit frames go from guest memory to the tap with one writev each;
//! received frames are read from the tap into a reused buffer and spread over as many receive
//! chains as they need (mergeable buffers). With no receive buffer left, the worker stops reading
//! the tap until the guest adds some: backpressure, never a silent drop.

use std::io;
use std::sync::Arc;

use log::{error, warn};

use super::tap::Tap;
use super::{FRAME_MAX, HDR_LEN, NetMetrics};
use crate::virtio::chain::{Chain, Segment};
use crate::virtio::device::{ActiveQueue, DeviceHealth};
use crate::virtio::iov::{IoVecs, write_bytes};
use crate::virtio::queue::{DeviceQueue, LogLimiter, Popped};
use crate::virtio::{GuestMem, VirtioInterrupt};

pub(super) const NAME: &str = "virtio-net";
const MAX_SEGMENTS: usize = 64;

/// What happened to the pending receive frame.
#[derive(Debug, PartialEq, Eq)]
enum Delivery {
    Delivered,
    NoRoom,
    Dropped,
}

/// Serves a network device's receive and transmit queues.
#[derive(Debug)]
pub struct NetWorker {
    mem: GuestMem,
    pub(super) rx: DeviceQueue,
    pub(super) tx: DeviceQueue,
    pub(super) tap: Tap,
    chain: Chain,
    iov: IoVecs,
    frame: Vec<u8>,
    frame_len: usize,
    gathered: Vec<(u16, usize, usize, u64)>,
    gathered_segs: Vec<Segment>,
    gathered_cap: u64,
    mergeable: bool,
    /// Whether the tap is registered for reading (not while the guest has no buffers).
    pub(super) tap_armed: bool,
    interrupt: Arc<dyn VirtioInterrupt>,
    health: Arc<DeviceHealth>,
    metrics: Arc<NetMetrics>,
    bad_frames: LogLimiter,
}

impl NetWorker {
    /// A worker for the receive and transmit queues.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        mem: GuestMem,
        rx: ActiveQueue,
        tx: ActiveQueue,
        tap: Tap,
        features: u64,
        interrupt: Arc<dyn VirtioInterrupt>,
        health: Arc<DeviceHealth>,
        metrics: Arc<NetMetrics>,
    ) -> Self {
        Self {
            mem,
            rx: DeviceQueue::new(NAME, rx, features, MAX_SEGMENTS),
            tx: DeviceQueue::new(NAME, tx, features, MAX_SEGMENTS),
            tap,
            chain: Chain::with_capacity(MAX_SEGMENTS),
            iov: IoVecs::with_capacity(MAX_SEGMENTS * 2),
            frame: vec![0; FRAME_MAX],
            frame_len: 0,
            gathered: Vec::with_capacity(64),
            gathered_segs: Vec::with_capacity(256),
            gathered_cap: 0,
            mergeable: features & (1 << super::features::MRG_RXBUF) != 0,
            tap_armed: false,
            interrupt,
            health,
            metrics,
            bad_frames: LogLimiter::default(),
        }
    }

    /// Sends every frame the guest queued.
    pub fn process_tx(&mut self) -> usize {
        let Self {
            mem,
            tx,
            chain,
            iov,
            tap,
            interrupt,
            health,
            metrics,
            bad_frames,
            ..
        } = self;
        tx.drain(mem, chain, interrupt, health, |chain| {
            let len = chain.readable_len();
            if len < HDR_LEN as u64 || len > FRAME_MAX as u64 {
                if bad_frames.allow() {
                    warn!("{NAME}: guest sent a {len}-byte transmit buffer; dropped");
                }
                NetMetrics::add(&metrics.dropped, 1);
                return 0;
            }
            iov.clear();
            let r = iov
                .push_range(mem, chain.readable(), 0, len)
                .map_err(|e| io::Error::other(e.to_string()))
                .and_then(|()| tap.write_frame(iov.as_slice()));
            iov.clear();
            match r {
                Ok(_) => {
                    NetMetrics::add(&metrics.tx_frames, 1);
                    NetMetrics::add(&metrics.tx_bytes, len);
                }
                Err(e) => {
                    if bad_frames.allow() {
                        warn!("{NAME}: tap {} refused a frame: {e}", tap.name());
                    }
                    NetMetrics::add(&metrics.dropped, 1);
                }
            }
            0
        })
    }

    /// Moves frames from the tap to the guest until the tap is empty or the guest has no room.
    /// Returns whether the tap should stay registered for reading.
    pub fn process_rx(&mut self) -> bool {
        let mut delivered = 0usize;
        let keep_reading = loop {
            if self.frame_len == 0 {
                match self.tap.read_frame(&mut self.frame) {
                    Ok(n) if n > HDR_LEN => self.frame_len = n,
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        error!("{NAME}: reading tap {}: {e}", self.tap.name());
                        break true;
                    }
                }
            }
            match self.deliver() {
                Delivery::Delivered => delivered += 1,
                Delivery::Dropped => {}
                Delivery::NoRoom => {
                    NetMetrics::add(&self.metrics.rx_backpressure, 1);
                    break false;
                }
            }
        };
        if delivered > 0 {
            if let Err(e) = self.rx.signal_used(&self.mem, self.interrupt.as_ref()) {
                self.rx.fail(&e, &self.health, self.interrupt.as_ref());
                return false;
            }
        }
        keep_reading && !self.rx.is_broken()
    }

    fn deliver(&mut self) -> Delivery {
        let need = self.frame_len as u64;
        while self.gathered_cap < need {
            match self.rx.pop(&self.mem, &mut self.chain) {
                Ok(Popped::Empty) => return Delivery::NoRoom,
                Ok(Popped::Bad(head, _)) => {
                    if let Err(e) = self.rx.complete(&self.mem, head, 0) {
                        self.rx.fail(&e, &self.health, self.interrupt.as_ref());
                        return Delivery::NoRoom;
                    }
                }
                Ok(Popped::Chain) => {
                    let cap = self.chain.writable_len();
                    if cap < HDR_LEN as u64 || (!self.mergeable && cap < need) {
                        // Unusable for this frame. Without mergeable buffers the guest sized its
                        // buffers too small for the frame: drop the frame, keep the buffer.
                        if cap >= HDR_LEN as u64 {
                            self.rx.unpop();
                            NetMetrics::add(&self.metrics.dropped, 1);
                            if self.bad_frames.allow() {
                                warn!(
                                    "{NAME}: a {need}-byte frame does not fit the guest's {cap}-byte receive buffer; dropped"
                                );
                            }
                            self.frame_len = 0;
                            return Delivery::Dropped;
                        }
                        if let Err(e) = self.rx.complete(&self.mem, self.chain.head(), 0) {
                            self.rx.fail(&e, &self.health, self.interrupt.as_ref());
                            return Delivery::NoRoom;
                        }
                        continue;
                    }
                    let start = self.gathered_segs.len();
                    self.gathered_segs.extend_from_slice(self.chain.writable());
                    self.gathered
                        .push((self.chain.head(), start, self.gathered_segs.len(), cap));
                    self.gathered_cap += cap;
                }
                Err(e) => {
                    self.rx.fail(&e, &self.health, self.interrupt.as_ref());
                    return Delivery::NoRoom;
                }
            }
        }
        // num_buffers (bytes 10..12 of the header) tells the driver how many buffers to merge.
        let nbuf = self.gathered.len() as u16;
        self.frame[10..12].copy_from_slice(&nbuf.to_le_bytes());
        let mut off = 0usize;
        let mut result = Delivery::Delivered;
        for &(head, s, e, cap) in &self.gathered {
            let n = (self.frame_len - off).min(cap as usize);
            let segs = &self.gathered_segs[s..e];
            let len = match write_bytes(&*self.mem, segs, 0, &self.frame[off..off + n]) {
                Ok(()) => n as u32,
                Err(err) => {
                    warn!("{NAME}: receive buffer vanished: {err}");
                    result = Delivery::Dropped;
                    0
                }
            };
            off += n;
            if let Err(err) = self.rx.complete(&self.mem, head, len) {
                self.rx.fail(&err, &self.health, self.interrupt.as_ref());
                result = Delivery::NoRoom;
                break;
            }
        }
        if result == Delivery::Delivered {
            NetMetrics::add(&self.metrics.rx_frames, 1);
            NetMetrics::add(&self.metrics.rx_bytes, self.frame_len as u64);
        }
        self.gathered.clear();
        self.gathered_segs.clear();
        self.gathered_cap = 0;
        self.frame_len = 0;
        result
    }
}

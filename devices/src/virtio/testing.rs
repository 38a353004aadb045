//! Helpers for tests and benchmarks: a driver-side view of a split ring that writes descriptors
//! exactly as a (possibly hostile) guest would, and an interrupt that counts.
#![allow(clippy::missing_panics_doc)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::GuestMem;
use super::chain::{DESC_F_NEXT, DESC_F_WRITE};
use super::device::{ActivateParams, ActiveQueue, DeviceHealth};
use super::interrupt::{InterruptError, VirtioInterrupt};
use super::transport::{QueueConfig, build_queue};

/// Polls `f` every millisecond until it holds; fails the test, naming `what`, after 10 s (a
/// device thread answers asynchronously, and a loaded machine may be slow).
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Guest memory of `size` bytes at address 0.
pub fn guest_mem(size: usize) -> GuestMem {
    Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).expect("test memory"))
}

/// A split ring as the driver sees it.
#[derive(Debug)]
pub struct TestRing {
    mem: GuestMem,
    /// Queue size.
    pub size: u16,
    /// Descriptor table address.
    pub desc: u64,
    /// Avail ring address.
    pub avail: u64,
    /// Used ring address.
    pub used: u64,
    avail_idx: u16,
}

impl TestRing {
    /// A ring of `size` entries laid out from `base`.
    pub fn new(mem: &GuestMem, base: u64, size: u16) -> Self {
        let desc = base;
        let avail = desc + 16 * u64::from(size);
        let used = (avail + 6 + 2 * u64::from(size) + 0xfff) & !0xfff;
        let r = Self {
            mem: mem.clone(),
            size,
            desc,
            avail,
            used,
            avail_idx: 0,
        };
        r.mem.write_obj(0u16, GuestAddress(avail)).unwrap();
        r.mem.write_obj(0u16, GuestAddress(avail + 2)).unwrap();
        r.mem.write_obj(0u16, GuestAddress(used)).unwrap();
        r.mem.write_obj(0u16, GuestAddress(used + 2)).unwrap();
        r
    }

    /// One past the last byte of the rings.
    pub fn end(&self) -> u64 {
        self.used + 6 + 8 * u64::from(self.size)
    }

    /// The queue configuration a driver would write for this ring.
    pub fn config(&self, max_size: u16) -> QueueConfig {
        QueueConfig {
            max_size,
            size: self.size,
            ready: true,
            desc: self.desc,
            avail: self.avail,
            used: self.used,
            vector: 0,
        }
    }

    /// An activated queue for this ring with index `index`, plus the notify eventfd's twin.
    pub fn active(&self, index: u16) -> (ActiveQueue, EventFd) {
        let queue = build_queue(&self.config(self.size), &self.mem).expect("valid test ring");
        let event = EventFd::new(EFD_NONBLOCK).unwrap();
        let twin = event.try_clone().unwrap();
        (
            ActiveQueue {
                index,
                queue,
                event,
            },
            twin,
        )
    }

    /// Writes descriptor `i`.
    pub fn set_desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = GuestAddress(self.desc + 16 * u64::from(i));
        self.mem.write_obj(addr, at).unwrap();
        self.mem.write_obj(len, GuestAddress(at.0 + 8)).unwrap();
        self.mem.write_obj(flags, GuestAddress(at.0 + 12)).unwrap();
        self.mem.write_obj(next, GuestAddress(at.0 + 14)).unwrap();
    }

    /// Writes `bufs` (address, length, device-writable) as a chain in descriptors `first..` and
    /// publishes it; returns the head.
    pub fn add_chain(&mut self, first: u16, bufs: &[(u64, u32, bool)]) -> u16 {
        for (k, &(addr, len, w)) in bufs.iter().enumerate() {
            let i = first + k as u16;
            let last = k + 1 == bufs.len();
            let flags = if w { DESC_F_WRITE } else { 0 } | if last { 0 } else { DESC_F_NEXT };
            self.set_desc(i, addr, len, flags, if last { 0 } else { i + 1 });
        }
        self.publish(first);
        first
    }

    /// Puts `head` in the avail ring and bumps its index.
    pub fn publish(&mut self, head: u16) {
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % self.size);
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.set_avail_idx(self.avail_idx);
    }

    /// Writes the avail index directly (hostile drivers jump it).
    pub fn set_avail_idx(&self, idx: u16) {
        self.mem
            .write_obj(idx, GuestAddress(self.avail + 2))
            .unwrap();
    }

    /// Sets the avail ring flags (1 = NO_INTERRUPT).
    pub fn set_avail_flags(&self, flags: u16) {
        self.mem.write_obj(flags, GuestAddress(self.avail)).unwrap();
    }

    /// Writes `used_event` (the index after which the driver wants an interrupt).
    pub fn set_used_event(&self, v: u16) {
        let at = self.avail + 4 + 2 * u64::from(self.size);
        self.mem.write_obj(v, GuestAddress(at)).unwrap();
    }

    /// The device's used index.
    pub fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(self.used + 2)).unwrap()
    }

    /// Used ring entry `i`: (head id, bytes written).
    pub fn used_elem(&self, i: u16) -> (u32, u32) {
        let at = self.used + 4 + 8 * u64::from(i % self.size);
        (
            self.mem.read_obj(GuestAddress(at)).unwrap(),
            self.mem.read_obj(GuestAddress(at + 4)).unwrap(),
        )
    }

    /// The device's avail_event (where it wants the next notification).
    pub fn avail_event(&self) -> u16 {
        let at = self.used + 4 + 8 * u64::from(self.size);
        self.mem.read_obj(GuestAddress(at)).unwrap()
    }

    /// The device's used flags (1 = NO_NOTIFY).
    pub fn used_flags(&self) -> u16 {
        self.mem.read_obj(GuestAddress(self.used)).unwrap()
    }
}

/// An interrupt that counts signals and also writes an eventfd tests can wait on.
#[derive(Debug)]
pub struct CountingInterrupt {
    /// Used-ring signals.
    pub queue: AtomicUsize,
    /// Configuration-change signals.
    pub config: AtomicUsize,
    /// Written on every signal.
    pub event: EventFd,
}

impl CountingInterrupt {
    /// A fresh counter.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            queue: AtomicUsize::new(0),
            config: AtomicUsize::new(0),
            event: EventFd::new(0).unwrap(),
        })
    }

    /// Used-ring signals so far.
    pub fn queue_signals(&self) -> usize {
        self.queue.load(Ordering::SeqCst)
    }

    /// Configuration signals so far.
    pub fn config_signals(&self) -> usize {
        self.config.load(Ordering::SeqCst)
    }

    /// Activation parameters that interrupt through this counter: `queues` on `mem`, the driver
    /// accepted `features`, and a fresh health record.
    pub fn activate_params(
        self: &Arc<Self>,
        mem: &GuestMem,
        queues: Vec<ActiveQueue>,
        features: u64,
    ) -> ActivateParams {
        ActivateParams {
            mem: mem.clone(),
            queues,
            interrupt: self.clone(),
            health: Arc::new(DeviceHealth::new()),
            features,
        }
    }
}

impl VirtioInterrupt for CountingInterrupt {
    fn signal_queue(&self, _queue: u16) -> Result<(), InterruptError> {
        self.queue.fetch_add(1, Ordering::SeqCst);
        self.event.write(1).map_err(|source| InterruptError::Irqfd {
            what: "test",
            source,
        })
    }

    fn signal_config(&self) -> Result<(), InterruptError> {
        self.config.fetch_add(1, Ordering::SeqCst);
        self.event.write(1).map_err(|source| InterruptError::Irqfd {
            what: "test",
            source,
        })
    }
}

//! Split virtqueues (virtio 1.2, 2.7) in probe memory: the descriptor table, the driver (avail)
//! ring and the device (used) ring each on their own 4 KiB page. The driver polls the used ring;
//! `set_interrupts(false)` asks the device not to interrupt (VIRTQ_AVAIL_F_NO_INTERRUPT).

use crate::checks::Why;
use core::sync::atomic::{Ordering, fence};

/// Most entries the probe uses per queue (a free-descriptor bitmap of one u64).
pub const MAX_SIZE: u16 = 64;
const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// One buffer of a chain.
#[derive(Clone, Copy, Debug)]
pub struct Buf {
    /// Guest-physical address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// The device writes it (else it reads it).
    pub write: bool,
}

impl Buf {
    /// A buffer the device reads.
    pub fn read(addr: u64, len: u32) -> Self {
        Self {
            addr,
            len,
            write: false,
        }
    }
    /// A buffer the device writes.
    pub fn write(addr: u64, len: u32) -> Self {
        Self {
            addr,
            len,
            write: true,
        }
    }
}

/// A split virtqueue driven from ring 3.
pub struct Virtqueue {
    /// The queue's index on its device.
    pub index: u16,
    /// virtio-pci: where a notification for this queue is written (set up by the transport).
    pub notify_addr: u64,
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    /// Bit `i` set: descriptor `i` is free.
    free: u64,
    /// Per head: the descriptors of its chain.
    chains: [u64; MAX_SIZE as usize],
    avail_idx: u16,
    last_used: u16,
}

impl Virtqueue {
    /// A queue for device queue `index` whose maximum size is `max`: the largest power of two
    /// up to `min(max, MAX_SIZE)`.
    pub fn new(index: u16, max: u16) -> Result<Self, Why> {
        let cap = max.min(MAX_SIZE);
        let size = 1u16 << (15 - cap.leading_zeros());
        let base = super::dma(3 * 4096)?;
        let free = if size == 64 {
            u64::MAX
        } else {
            (1u64 << size) - 1
        };
        Ok(Self {
            index,
            notify_addr: 0,
            size,
            desc: base,
            avail: base + 4096,
            used: base + 8192,
            free,
            chains: [0; MAX_SIZE as usize],
            avail_idx: 0,
            last_used: 0,
        })
    }

    /// Number of entries.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// (descriptor table, avail ring, used ring) addresses.
    pub fn addrs(&self) -> (u64, u64, u64) {
        (self.desc, self.avail, self.used)
    }

    /// Free descriptors.
    pub fn free_count(&self) -> u32 {
        self.free.count_ones()
    }

    /// Asks the device to interrupt on completions (`true`) or not.
    pub fn set_interrupts(&mut self, on: bool) {
        let flags = if on { 0 } else { AVAIL_F_NO_INTERRUPT };
        // SAFETY: the avail ring's flags field, in this queue's own page.
        unsafe { (self.avail as *mut u16).write_volatile(flags) };
    }

    /// Puts the chain `bufs` in the avail ring (the caller notifies). Returns its head.
    pub fn add(&mut self, bufs: &[Buf]) -> Result<u16, Why> {
        if bufs.is_empty() || bufs.len() > self.free_count() as usize {
            return Err(Why::At(
                "no free descriptors for a chain of",
                bufs.len() as u64,
            ));
        }
        let mut ids = [0u16; MAX_SIZE as usize];
        let mut mask = 0u64;
        for id in ids.iter_mut().take(bufs.len()) {
            let i = (self.free & !mask).trailing_zeros() as u16;
            mask |= 1 << i;
            *id = i;
        }
        for (n, b) in bufs.iter().enumerate() {
            let last = n + 1 == bufs.len();
            let mut flags = if b.write { DESC_F_WRITE } else { 0 };
            let next = if last {
                0
            } else {
                flags |= DESC_F_NEXT;
                ids[n + 1]
            };
            let d = self.desc + u64::from(ids[n]) * 16;
            // SAFETY: descriptor `ids[n] < size` lies in this queue's descriptor page, which
            // the device only reads once the head is published below.
            unsafe {
                (d as *mut u64).write_volatile(b.addr);
                ((d + 8) as *mut u32).write_volatile(b.len);
                ((d + 12) as *mut u16).write_volatile(flags);
                ((d + 14) as *mut u16).write_volatile(next);
            }
        }
        self.free &= !mask;
        let head = ids[0];
        self.chains[usize::from(head)] = mask;
        let slot = self.avail + 4 + u64::from(self.avail_idx % self.size) * 2;
        // SAFETY: the ring slot and index are inside the avail page; the fence orders the
        // descriptor and slot writes before the index the device reads.
        unsafe {
            (slot as *mut u16).write_volatile(head);
            fence(Ordering::SeqCst);
            self.avail_idx = self.avail_idx.wrapping_add(1);
            ((self.avail + 2) as *mut u16).write_volatile(self.avail_idx);
        }
        fence(Ordering::SeqCst);
        Ok(head)
    }

    /// The next completed chain `(head, bytes written)`, if any; its descriptors become free.
    pub fn poll(&mut self) -> Result<Option<(u16, u32)>, Why> {
        // SAFETY: the used ring's index field, in this queue's used page.
        let idx = unsafe { ((self.used + 2) as *const u16).read_volatile() };
        if idx == self.last_used {
            return Ok(None);
        }
        fence(Ordering::Acquire);
        let e = self.used + 4 + u64::from(self.last_used % self.size) * 8;
        // SAFETY: the element lies in the used page (index < size).
        let (id, len) = unsafe {
            (
                (e as *const u32).read_volatile(),
                ((e + 4) as *const u32).read_volatile(),
            )
        };
        self.last_used = self.last_used.wrapping_add(1);
        let chain = self.chains.get(id as usize).copied().unwrap_or(0);
        if chain == 0 {
            return Err(Why::At(
                "the device returned a chain never offered:",
                id.into(),
            ));
        }
        self.chains[id as usize] = 0;
        self.free |= chain;
        Ok(Some((id as u16, len)))
    }
}

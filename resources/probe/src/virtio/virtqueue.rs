//! Split virtqueues (virtio 1.2, 2.7) in probe memory: the descriptor table, the driver (avail)
//! ring and the device (used) ring each on their own 4 KiB page. The driver polls the used ring;
//! `set_interrupts(false)` asks the device not to interrupt (VIRTQ_AVAIL_F_NO_INTERRUPT).

use crate::checks::Why;
use core::sync::atomic::{Ordering, fence};

/// Most entries the checks use per queue ([`super::Device::queue`]).
pub const MAX_SIZE: u16 = 64;
/// Most entries a queue can have here: 256 descriptors fill the 4 KiB descriptor page
/// (`blkbench` keeps up to 64 three-descriptor requests in flight).
pub const LIMIT: u16 = 256;
const WORDS: usize = LIMIT as usize / 64;
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
    /// Bit `i % 64` of word `i / 64` set: descriptor `i` is free.
    free: [u64; WORDS],
    /// Per descriptor of an offered chain: the next descriptor of the chain.
    next: [u16; LIMIT as usize],
    /// Per head: the length of its chain (0: not offered).
    chain_len: [u16; LIMIT as usize],
    avail_idx: u16,
    last_used: u16,
}

impl Virtqueue {
    /// A queue for device queue `index` whose maximum size is `max`: the largest power of two
    /// up to `min(max, LIMIT)`.
    pub fn new(index: u16, max: u16) -> Result<Self, Why> {
        let cap = max.clamp(1, LIMIT);
        let size = 1u16 << (15 - cap.leading_zeros());
        let base = super::dma(3 * 4096)?;
        let mut free = [0u64; WORDS];
        for i in 0..usize::from(size) {
            free[i / 64] |= 1 << (i % 64);
        }
        Ok(Self {
            index,
            notify_addr: 0,
            size,
            desc: base,
            avail: base + 4096,
            used: base + 8192,
            free,
            next: [0; LIMIT as usize],
            chain_len: [0; LIMIT as usize],
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
        self.free.iter().map(|w| w.count_ones()).sum()
    }

    fn take_free(&mut self) -> u16 {
        let w = self.free.iter().position(|&w| w != 0).unwrap_or(0);
        let bit = self.free[w].trailing_zeros();
        self.free[w] &= !(1u64 << bit);
        (w * 64) as u16 + bit as u16
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
        let mut ids = [0u16; LIMIT as usize];
        for id in ids.iter_mut().take(bufs.len()) {
            *id = self.take_free();
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
            self.next[usize::from(ids[n])] = next;
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
        let head = ids[0];
        self.chain_len[usize::from(head)] = bufs.len() as u16;
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
        let chain = self.chain_len.get(id as usize).copied().unwrap_or(0);
        if chain == 0 {
            return Err(Why::At(
                "the device returned a chain never offered:",
                id.into(),
            ));
        }
        self.chain_len[id as usize] = 0;
        let mut d = id as usize;
        for _ in 0..chain {
            self.free[d / 64] |= 1 << (d % 64);
            d = usize::from(self.next[d]);
        }
        Ok(Some((id as u16, len)))
    }
}

//! Descriptor chains, parsed as hostile input.
//!
//! virtio-queue's own chain iterator ends silently on a bad descriptor, so a device could not tell
//! a short chain from a malicious one. [`Chain::parse`] walks the chain itself and names what the
//! guest did wrong: loops, chains longer than the queue, indexes past the table, buffers outside
//! guest memory or over the device's own rings, zero or overflowing lengths, nested or
//! un-negotiated indirect tables, a readable buffer after a writable one.

use vm_memory::{
    Address, ByteValued, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, VolatileMemory,
};

/// Descriptor flag: the chain continues at `next`.
pub const DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the device writes this buffer.
pub const DESC_F_WRITE: u16 = 2;
/// Descriptor flag: the buffer is a table of descriptors.
pub const DESC_F_INDIRECT: u16 = 4;
/// Size of one split-ring descriptor.
pub const DESC_SIZE: u64 = 16;

/// What was wrong with a descriptor chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The head or a `next` index is outside the descriptor table.
    #[error("descriptor index {index} is outside the table of {size} entries")]
    IndexOutOfRange {
        /// The bad index.
        index: u16,
        /// The table size.
        size: u16,
    },
    /// The chain visits more descriptors than its table holds: it loops.
    #[error("the chain is longer than its table of {size} descriptors (a loop)")]
    Loop {
        /// The table size.
        size: u16,
    },
    /// The descriptor table itself could not be read from guest memory.
    #[error("descriptor table entry at {addr:#x} is not in guest memory")]
    TableUnreadable {
        /// Address of the descriptor.
        addr: u64,
    },
    /// A buffer of length zero.
    #[error("descriptor {index} has length zero")]
    ZeroLength {
        /// Descriptor index.
        index: u16,
    },
    /// A buffer that is not entirely within guest memory.
    #[error("buffer {addr:#x}+{len:#x} is not in guest memory")]
    OutsideMemory {
        /// Buffer address.
        addr: u64,
        /// Buffer length.
        len: u32,
    },
    /// A device-writable buffer that overlaps this queue's rings.
    #[error("writable buffer {addr:#x}+{len:#x} overlaps the queue's own rings")]
    OverlapsRings {
        /// Buffer address.
        addr: u64,
        /// Buffer length.
        len: u32,
    },
    /// The total length of the chain exceeds 4 GiB.
    #[error("the chain's total length exceeds 4 GiB")]
    TooLong,
    /// More buffers than the device accepts in one request.
    #[error("the chain has more than {max} buffers")]
    TooManySegments {
        /// The limit.
        max: usize,
    },
    /// A readable buffer after a writable one (the spec orders readable first).
    #[error("descriptor {index} is readable but follows a writable one")]
    ReadableAfterWritable {
        /// Descriptor index.
        index: u16,
    },
    /// An indirect descriptor although VIRTIO_F_INDIRECT_DESC was not negotiated.
    #[error("indirect descriptor used without VIRTIO_F_INDIRECT_DESC")]
    IndirectNotNegotiated,
    /// An indirect descriptor inside an indirect table.
    #[error("indirect descriptor inside an indirect table")]
    NestedIndirect,
    /// An indirect descriptor that also has NEXT or WRITE set.
    #[error("indirect descriptor with NEXT or WRITE flags {flags:#x}")]
    IndirectFlags {
        /// The flags.
        flags: u16,
    },
    /// An indirect table whose length is zero, not a multiple of 16 or too large.
    #[error("indirect table length {len:#x} is zero, unaligned or above {max} entries")]
    IndirectLength {
        /// The table length in bytes.
        len: u32,
        /// The most entries accepted.
        max: usize,
    },
}

/// One guest buffer of a chain, already checked to lie in guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Guest physical address.
    pub addr: GuestAddress,
    /// Length in bytes (never zero).
    pub len: u32,
}

/// Limits a device puts on the chains it accepts, and the ring areas buffers may not overlap.
#[derive(Debug, Clone, Default)]
pub struct ChainRules {
    /// Whether VIRTIO_F_INDIRECT_DESC was negotiated.
    pub indirect: bool,
    /// The most buffers one chain may have.
    pub max_segments: usize,
    /// Guest ranges `[start, end)` of the queue's descriptor table, avail ring and used ring.
    pub rings: [(u64, u64); 3],
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct RawDesc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}
// SAFETY: RawDesc is repr(C), 16 bytes without padding, and any bit pattern is a valid value.
unsafe impl ByteValued for RawDesc {}
const _: () = assert!(std::mem::size_of::<RawDesc>() == DESC_SIZE as usize);

/// A parsed chain: its head index and buffers, readable ones first. The buffers live in a vector
/// the device reuses, so parsing does not allocate once it has grown to the device's limit.
#[derive(Debug, Default)]
pub struct Chain {
    head: u16,
    segments: Vec<Segment>,
    first_writable: usize,
    readable_len: u64,
    writable_len: u64,
}

/// Whether `[addr, addr + len)` lies in guest memory. The common case (one region) is a binary
/// search and a compare; ranges spanning regions take vm-memory's general path.
fn in_memory<M: GuestMemoryBackend>(mem: &M, addr: u64, len: u32) -> bool {
    let Some(last) = u64::from(len)
        .checked_sub(1)
        .and_then(|l| addr.checked_add(l))
    else {
        return false;
    };
    match mem.find_region(GuestAddress(addr)) {
        Some(r) if last <= r.last_addr().0 => true,
        Some(_) => mem.check_range(GuestAddress(addr), len as usize),
        None => false,
    }
}

/// Reads descriptor `index` of the table at `table` of `size` entries, through a slice of the
/// whole table when it is mapped contiguously (one lookup per table instead of per descriptor).
fn read_desc<M: GuestMemoryBackend>(
    mem: &M,
    slice: Option<&vm_memory::VolatileSlice<'_, vm_memory::bitmap::MS<'_, M>>>,
    table: GuestAddress,
    index: u16,
) -> Result<RawDesc, ChainError> {
    let off = u64::from(index) * DESC_SIZE;
    if let Some(d) = slice.and_then(|s| s.get_ref::<RawDesc>(off as usize).ok()) {
        return Ok(d.load());
    }
    let at = table.unchecked_add(off);
    mem.read_obj(at)
        .map_err(|_| ChainError::TableUnreadable { addr: at.0 })
}

impl Chain {
    /// An empty chain with room for `max_segments` buffers.
    pub fn with_capacity(max_segments: usize) -> Self {
        Self {
            segments: Vec::with_capacity(max_segments),
            ..Self::default()
        }
    }

    /// The head descriptor index (what goes into the used ring).
    pub fn head(&self) -> u16 {
        self.head
    }

    /// The device-readable buffers.
    pub fn readable(&self) -> &[Segment] {
        &self.segments[..self.first_writable]
    }

    /// The device-writable buffers.
    pub fn writable(&self) -> &[Segment] {
        &self.segments[self.first_writable..]
    }

    /// Total bytes the device may read.
    pub fn readable_len(&self) -> u64 {
        self.readable_len
    }

    /// Total bytes the device may write.
    pub fn writable_len(&self) -> u64 {
        self.writable_len
    }

    /// Walks the chain at `head` in the descriptor table at `table` of `size` entries.
    pub fn parse<M: GuestMemoryBackend>(
        &mut self,
        mem: &M,
        table: GuestAddress,
        size: u16,
        head: u16,
        rules: &ChainRules,
    ) -> Result<(), ChainError> {
        self.head = head;
        self.segments.clear();
        self.first_writable = 0;
        self.readable_len = 0;
        self.writable_len = 0;
        let mut table = table;
        let mut size = size;
        let mut index = head;
        let mut ttl = size;
        let mut indirect = false;
        let mut seen_writable = false;
        let mut total: u32 = 0;
        let mut slice = mem
            .get_slice(table, usize::from(size) * DESC_SIZE as usize)
            .ok();
        loop {
            if index >= size {
                return Err(ChainError::IndexOutOfRange { index, size });
            }
            if ttl == 0 {
                return Err(ChainError::Loop { size });
            }
            ttl -= 1;
            let desc = read_desc(mem, slice.as_ref(), table, index)?;
            let (addr, len, flags, next) = (
                u64::from_le(desc.addr),
                u32::from_le(desc.len),
                u16::from_le(desc.flags),
                u16::from_le(desc.next),
            );
            if flags & DESC_F_INDIRECT != 0 {
                if !rules.indirect {
                    return Err(ChainError::IndirectNotNegotiated);
                }
                if indirect {
                    return Err(ChainError::NestedIndirect);
                }
                if flags & (DESC_F_NEXT | DESC_F_WRITE) != 0 {
                    return Err(ChainError::IndirectFlags { flags });
                }
                let entries = u64::from(len) / DESC_SIZE;
                let max = rules.max_segments.min(usize::from(u16::MAX));
                if len == 0 || u64::from(len) % DESC_SIZE != 0 || entries > max as u64 {
                    return Err(ChainError::IndirectLength { len, max });
                }
                if !in_memory(mem, addr, len) {
                    return Err(ChainError::OutsideMemory { addr, len });
                }
                indirect = true;
                table = GuestAddress(addr);
                slice = mem.get_slice(table, len as usize).ok();
                // `entries <= u16::MAX` was checked above.
                size = entries as u16;
                ttl = size;
                index = 0;
                continue;
            }
            if len == 0 {
                return Err(ChainError::ZeroLength { index });
            }
            total = total.checked_add(len).ok_or(ChainError::TooLong)?;
            let writable = flags & DESC_F_WRITE != 0;
            if addr.checked_add(u64::from(len)).is_none() || !in_memory(mem, addr, len) {
                return Err(ChainError::OutsideMemory { addr, len });
            }
            if writable {
                let end = addr + u64::from(len);
                if rules.rings.iter().any(|&(s, e)| addr < e && s < end) {
                    return Err(ChainError::OverlapsRings { addr, len });
                }
                seen_writable = true;
                self.writable_len += u64::from(len);
            } else {
                if seen_writable {
                    return Err(ChainError::ReadableAfterWritable { index });
                }
                self.first_writable += 1;
                self.readable_len += u64::from(len);
            }
            if self.segments.len() >= rules.max_segments {
                return Err(ChainError::TooManySegments {
                    max: rules.max_segments,
                });
            }
            self.segments.push(Segment {
                addr: GuestAddress(addr),
                len,
            });
            if flags & DESC_F_NEXT == 0 {
                return Ok(());
            }
            index = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::testing::{TestRing, guest_mem};

    const MEM: usize = 0x10_0000;

    fn rules(ring: &TestRing, indirect: bool, max_segments: usize) -> ChainRules {
        ChainRules {
            indirect,
            max_segments,
            rings: [
                (ring.desc, ring.desc + 16 * u64::from(ring.size)),
                (ring.avail, ring.avail + 6 + 2 * u64::from(ring.size)),
                (ring.used, ring.end()),
            ],
        }
    }

    fn parse(ring: &TestRing, head: u16, indirect: bool) -> (Chain, Result<(), ChainError>) {
        parse_max(ring, head, indirect, 64)
    }

    fn parse_max(
        ring: &TestRing,
        head: u16,
        indirect: bool,
        max: usize,
    ) -> (Chain, Result<(), ChainError>) {
        let mut c = Chain::with_capacity(max);
        let r = c.parse(
            &*ring_mem(ring),
            GuestAddress(ring.desc),
            ring.size,
            head,
            &rules(ring, indirect, max),
        );
        (c, r)
    }

    thread_local! {
        static MEMS: std::cell::RefCell<Option<crate::virtio::GuestMem>> = const { std::cell::RefCell::new(None) };
    }

    fn ring_mem(_ring: &TestRing) -> crate::virtio::GuestMem {
        MEMS.with(|m| m.borrow().clone().expect("ring memory"))
    }

    fn setup() -> TestRing {
        let mem = guest_mem(MEM);
        MEMS.with(|m| *m.borrow_mut() = Some(mem.clone()));
        TestRing::new(&mem, 0, 16)
    }

    #[test]
    fn parses_readable_then_writable() {
        let mut r = setup();
        r.add_chain(
            0,
            &[(0x8000, 16, false), (0x9000, 512, true), (0x9200, 1, true)],
        );
        let (c, res) = parse(&r, 0, false);
        res.unwrap();
        assert_eq!(c.readable().len(), 1);
        assert_eq!(c.writable().len(), 2);
        assert_eq!(c.readable_len(), 16);
        assert_eq!(c.writable_len(), 513);
    }

    #[test]
    fn rejects_loops_and_bad_indexes() {
        let r = setup();
        r.set_desc(0, 0x8000, 16, DESC_F_NEXT, 1);
        r.set_desc(1, 0x8100, 16, DESC_F_NEXT, 0);
        assert_eq!(parse(&r, 0, false).1, Err(ChainError::Loop { size: 16 }));
        // A self-loop.
        r.set_desc(2, 0x8000, 16, DESC_F_NEXT, 2);
        assert_eq!(parse(&r, 2, false).1, Err(ChainError::Loop { size: 16 }));
        r.set_desc(3, 0x8000, 16, DESC_F_NEXT, 16);
        assert_eq!(
            parse(&r, 3, false).1,
            Err(ChainError::IndexOutOfRange {
                index: 16,
                size: 16
            })
        );
        assert_eq!(
            parse(&r, 200, false).1,
            Err(ChainError::IndexOutOfRange {
                index: 200,
                size: 16
            })
        );
    }

    #[test]
    fn rejects_bad_buffers() {
        let r = setup();
        r.set_desc(0, 0x8000, 0, 0, 0);
        assert_eq!(
            parse(&r, 0, false).1,
            Err(ChainError::ZeroLength { index: 0 })
        );
        r.set_desc(0, MEM as u64 - 8, 16, 0, 0);
        assert!(matches!(
            parse(&r, 0, false).1,
            Err(ChainError::OutsideMemory { .. })
        ));
        r.set_desc(0, u64::MAX - 4, 16, 0, 0);
        assert!(matches!(
            parse(&r, 0, false).1,
            Err(ChainError::OutsideMemory { .. })
        ));
        // Writable over the used ring, the avail ring and the descriptor table.
        for target in [r.used, r.avail + 2, r.desc] {
            r.set_desc(0, target, 8, DESC_F_WRITE, 0);
            assert!(matches!(
                parse(&r, 0, false).1,
                Err(ChainError::OverlapsRings { .. })
            ));
        }
        // Reading the rings is harmless and allowed.
        r.set_desc(0, r.used, 8, 0, 0);
        assert_eq!(parse(&r, 0, false).1, Ok(()));
        r.set_desc(0, 0x8000, 8, DESC_F_WRITE | DESC_F_NEXT, 1);
        r.set_desc(1, 0x9000, 8, 0, 0);
        assert_eq!(
            parse(&r, 0, false).1,
            Err(ChainError::ReadableAfterWritable { index: 1 })
        );
        for i in 0..9 {
            r.set_desc(i, 0x8000, 8, DESC_F_NEXT, i + 1);
        }
        r.set_desc(9, 0x8000, 8, 0, 0);
        assert_eq!(
            parse_max(&r, 0, false, 8).1,
            Err(ChainError::TooManySegments { max: 8 })
        );
    }

    #[test]
    fn rejects_chains_above_4_gib() {
        // Untouched anonymous memory costs nothing, so 4 GiB of guest memory is cheap here.
        let mem = guest_mem(0x1_0000_2000);
        MEMS.with(|m| *m.borrow_mut() = Some(mem.clone()));
        let r = TestRing::new(&mem, 0, 16);
        r.set_desc(0, 0x10000, 0x8000_0000, DESC_F_NEXT, 1);
        r.set_desc(1, 0x8001_0000, 0x8000_0000, 0, 0);
        assert_eq!(parse(&r, 0, false).1, Err(ChainError::TooLong));
    }

    #[test]
    fn indirect_tables() {
        let r = setup();
        let mem = ring_mem(&r);
        let table = 0x20000u64;
        let put = |i: u64, addr: u64, len: u32, flags: u16, next: u16| {
            let at = GuestAddress(table + 16 * i);
            mem.write_obj(addr, at).unwrap();
            mem.write_obj(len, GuestAddress(at.0 + 8)).unwrap();
            mem.write_obj(flags, GuestAddress(at.0 + 12)).unwrap();
            mem.write_obj(next, GuestAddress(at.0 + 14)).unwrap();
        };
        put(0, 0x8000, 16, DESC_F_NEXT, 1);
        put(1, 0x9000, 64, DESC_F_WRITE, 0);
        r.set_desc(0, table, 32, DESC_F_INDIRECT, 0);
        assert_eq!(
            parse(&r, 0, false).1,
            Err(ChainError::IndirectNotNegotiated)
        );
        let (c, res) = parse(&r, 0, true);
        res.unwrap();
        assert_eq!((c.readable_len(), c.writable_len()), (16, 64));
        // Nested indirect.
        put(1, table, 32, DESC_F_INDIRECT, 0);
        assert_eq!(parse(&r, 0, true).1, Err(ChainError::NestedIndirect));
        // Bad table lengths and flags.
        for len in [0, 24, 16 * 65] {
            r.set_desc(0, table, len, DESC_F_INDIRECT, 0);
            assert!(matches!(
                parse(&r, 0, true).1,
                Err(ChainError::IndirectLength { .. })
            ));
        }
        r.set_desc(0, table, 32, DESC_F_INDIRECT | DESC_F_NEXT, 1);
        assert!(matches!(
            parse(&r, 0, true).1,
            Err(ChainError::IndirectFlags { .. })
        ));
        r.set_desc(0, MEM as u64 - 16, 32, DESC_F_INDIRECT, 0);
        assert!(matches!(
            parse(&r, 0, true).1,
            Err(ChainError::OutsideMemory { .. })
        ));
        // An indirect table that loops.
        put(0, 0x8000, 16, DESC_F_NEXT, 1);
        put(1, 0x8000, 16, DESC_F_NEXT, 0);
        r.set_desc(0, table, 32, DESC_F_INDIRECT, 0);
        assert_eq!(parse(&r, 0, true).1, Err(ChainError::Loop { size: 2 }));
    }
}

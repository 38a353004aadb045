//! Guest memory: the x86 layout of docs/machine.md (RAM below the 32-bit MMIO hole, the rest above
//! 4 GiB), the e820 map that describes it, and the anonymous mappings that back it.
//!
//! Guest RAM is mapped `MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE` (vm-memory's default) and
//! never touched up front: pages become resident only when the guest or the loader touches them.

use veil_devices::pci::root::ECAM_BUS0_LEN;
use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::device_manager::ECAM_BASE;

/// Start of the EBDA, which holds the MP table.
pub const EBDA_START: u64 = 0x9_fc00;
/// Start of the legacy VGA/BIOS area (reserved up to 1 MiB).
pub const LEGACY_START: u64 = 0xa_0000;
/// Where kernels load and general RAM above the legacy area begins.
pub const HIGH_MEMORY_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO hole; low RAM ends here at the latest.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// Where RAM above the hole resumes.
pub const RAM_ABOVE_4G: u64 = 1 << 32;

/// Kinds of e820 / PVH memory-map entries Veil uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Kind {
    /// Usable RAM.
    Ram = 1,
    /// Reserved: not RAM the guest may allocate.
    Reserved = 2,
}

/// One memory-map entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// First guest-physical address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// What the range is.
    pub kind: E820Kind,
}

/// The layout of `ram` bytes of guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLayout {
    ram: u64,
}

/// Errors from creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The host refused the mapping.
    #[error("cannot map {size} bytes of guest RAM: {source}")]
    Map {
        /// Total RAM asked for.
        size: u64,
        /// vm-memory's error.
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
}

impl MemoryLayout {
    /// The layout for `ram` bytes (validated by `VmConfig`: at least 4 MiB, page aligned).
    pub fn new(ram: u64) -> Self {
        Self { ram }
    }

    /// Total guest RAM.
    pub fn ram(&self) -> u64 {
        self.ram
    }

    /// End (exclusive) of RAM below the MMIO hole.
    pub fn low_ram_end(&self) -> u64 {
        self.ram.min(MMIO_HOLE_START)
    }

    /// Bytes of RAM above 4 GiB.
    pub fn high_ram(&self) -> u64 {
        self.ram - self.low_ram_end()
    }

    /// The RAM ranges to map: `(start, length)`.
    pub fn ranges(&self) -> Vec<(GuestAddress, usize)> {
        let mut v = vec![(GuestAddress(0), self.low_ram_end() as usize)];
        if self.high_ram() > 0 {
            v.push((GuestAddress(RAM_ABOVE_4G), self.high_ram() as usize));
        }
        v
    }

    /// The memory map given to the guest (e820 in `boot_params`, the PVH memmap).
    pub fn e820(&self) -> Vec<E820Entry> {
        let e = |addr, end: u64, kind| E820Entry {
            addr,
            size: end - addr,
            kind,
        };
        let mut v = vec![
            e(0, EBDA_START, E820Kind::Ram),
            e(EBDA_START, LEGACY_START, E820Kind::Reserved),
            e(LEGACY_START, HIGH_MEMORY_START, E820Kind::Reserved),
            e(HIGH_MEMORY_START, self.low_ram_end(), E820Kind::Ram),
            // Linux uses the MCFG's ECAM window only if the firmware map reserves it.
            e(ECAM_BASE, ECAM_BASE + ECAM_BUS0_LEN, E820Kind::Reserved),
        ];
        if self.high_ram() > 0 {
            v.push(e(
                RAM_ABOVE_4G,
                RAM_ABOVE_4G + self.high_ram(),
                E820Kind::Ram,
            ));
        }
        v
    }

    /// Maps guest RAM (reserving no swap and touching no page).
    pub fn create(&self) -> Result<GuestMemoryMmap, MemoryError> {
        GuestMemoryMmap::from_ranges(&self.ranges()).map_err(|source| MemoryError::Map {
            size: self.ram,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

    fn usable(l: &MemoryLayout) -> u64 {
        l.e820()
            .iter()
            .filter(|e| e.kind == E820Kind::Ram)
            .map(|e| e.size)
            .sum()
    }

    #[test]
    fn small_guest_lives_below_the_hole() {
        let l = MemoryLayout::new(256 << 20);
        assert_eq!(l.ranges(), vec![(GuestAddress(0), 256 << 20)]);
        let map = l.e820();
        assert_eq!(map.len(), 5);
        assert_eq!(map[3].addr + map[3].size, 256 << 20);
        assert_eq!((map[4].addr, map[4].kind), (ECAM_BASE, E820Kind::Reserved));
        assert_eq!(usable(&l), (256 << 20) - (HIGH_MEMORY_START - EBDA_START));
    }

    #[test]
    fn big_guest_is_split_around_the_hole() {
        let l = MemoryLayout::new(5 << 30);
        assert_eq!(
            l.ranges(),
            vec![(GuestAddress(0), 3 << 30), (GuestAddress(4 << 30), 2 << 30)]
        );
        let last = *l.e820().last().unwrap();
        assert_eq!((last.addr, last.size), (4 << 30, 2 << 30));
        assert_eq!(usable(&l), (5 << 30) - (HIGH_MEMORY_START - EBDA_START));
        // No RAM overlaps the MMIO hole.
        for e in l.e820().into_iter().filter(|e| e.kind == E820Kind::Ram) {
            assert!(e.addr + e.size <= MMIO_HOLE_START || e.addr >= RAM_ABOVE_4G);
        }
    }

    #[test]
    fn mapping_matches_the_layout() {
        let l = MemoryLayout::new(4 << 30);
        let mem = l.create().unwrap();
        let regions: Vec<_> = mem.iter().map(|r| (r.start_addr().0, r.len())).collect();
        assert_eq!(regions, vec![(0, 3 << 30), (4 << 30, 1 << 30)]);
    }
}

//! The PVH boot protocol's `hvm_start_info` (version 1) with its memory map and module list,
//! written at `0x6000`.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{CMDLINE_ADDR, Initramfs};
use crate::memory::E820Entry;
use crate::x86::acpi::RSDP_ADDR;

/// Guest-physical address of `hvm_start_info`.
pub const START_INFO_ADDR: u64 = 0x6000;
const START_INFO_MAGIC: u32 = 0x336e_c578;
const START_INFO_LEN: u64 = 56;
const MEMMAP_ENTRY_LEN: u64 = 24;

/// `hvm_start_info`, its memmap and module list as bytes to write at [`START_INFO_ADDR`].
pub fn start_info(e820: &[E820Entry], initramfs: Option<Initramfs>) -> Vec<u8> {
    let memmap_addr = START_INFO_ADDR + START_INFO_LEN;
    let modlist_addr = memmap_addr + MEMMAP_ENTRY_LEN * e820.len() as u64;
    let mut b = Vec::with_capacity(256);
    b.extend_from_slice(&START_INFO_MAGIC.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes()); // version
    b.extend_from_slice(&0u32.to_le_bytes()); // flags
    b.extend_from_slice(&u32::from(initramfs.is_some()).to_le_bytes()); // nr_modules
    let modlist = if initramfs.is_some() { modlist_addr } else { 0 };
    b.extend_from_slice(&modlist.to_le_bytes());
    b.extend_from_slice(&CMDLINE_ADDR.to_le_bytes());
    b.extend_from_slice(&RSDP_ADDR.to_le_bytes());
    b.extend_from_slice(&memmap_addr.to_le_bytes());
    b.extend_from_slice(&(e820.len() as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // reserved
    debug_assert_eq!(b.len() as u64, START_INFO_LEN);
    for e in e820 {
        b.extend_from_slice(&e.addr.to_le_bytes());
        b.extend_from_slice(&e.size.to_le_bytes());
        b.extend_from_slice(&(e.kind as u32).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
    }
    if let Some(rd) = initramfs {
        // hvm_modlist_entry: paddr, size, cmdline_paddr (none), reserved.
        for v in [rd.addr, rd.size, 0, 0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
    }
    b
}

/// Writes the PVH structures.
pub fn write(
    mem: &GuestMemoryMmap,
    e820: &[E820Entry],
    initramfs: Option<Initramfs>,
) -> Result<(), vm_memory::GuestMemoryError> {
    mem.write_slice(&start_info(e820, initramfs), GuestAddress(START_INFO_ADDR))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryLayout;

    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    #[test]
    fn start_info_points_at_its_parts() {
        let layout = MemoryLayout::new(512 << 20);
        let rd = Initramfs {
            addr: 0x1f00_0000,
            size: 0x1234,
        };
        let b = start_info(&layout.e820(), Some(rd));
        assert_eq!(u32_at(&b, 0), START_INFO_MAGIC);
        assert_eq!(u32_at(&b, 4), 1);
        assert_eq!(u32_at(&b, 12), 1);
        assert_eq!(u64_at(&b, 24), CMDLINE_ADDR);
        assert_eq!(u64_at(&b, 32), RSDP_ADDR);
        let memmap = (u64_at(&b, 40) - START_INFO_ADDR) as usize;
        let n = u32_at(&b, 48) as usize;
        assert_eq!(n, layout.e820().len());
        // Entry 3 is the RAM above 1 MiB (entry 4 reserves the PCI ECAM window).
        let ram = memmap + 24 * 3;
        assert_eq!(u64_at(&b, ram) + u64_at(&b, ram + 8), 512 << 20);
        assert_eq!(u32_at(&b, ram + 16), 1);
        let modlist = (u64_at(&b, 16) - START_INFO_ADDR) as usize;
        assert_eq!(
            (u64_at(&b, modlist), u64_at(&b, modlist + 8)),
            (rd.addr, rd.size)
        );
        assert!(b.len() <= 0x1000);
        assert_eq!(u64_at(&start_info(&layout.e820(), None), 16), 0);
    }
}

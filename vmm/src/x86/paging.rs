//! Boot page tables for the 64-bit Linux boot protocol: an identity map of the first 4 GiB with
//! 2 MiB pages. PML4 at `0x9000`, PDPT at `0xa000`, four page directories at `0xb000..0xf000`.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest-physical address of the PML4 (the value of CR3).
pub const PML4_ADDR: u64 = 0x9000;
const PDPT_ADDR: u64 = 0xa000;
const PD_ADDR: u64 = 0xb000;
const PRESENT_RW: u64 = 0x3;
const PAGE_SIZE_2M: u64 = 0x80;

/// The tables as `(address, page of 512 entries)`.
pub fn tables() -> Vec<(u64, [u64; 512])> {
    let mut pml4 = [0u64; 512];
    pml4[0] = PDPT_ADDR | PRESENT_RW;
    let mut pdpt = [0u64; 512];
    let mut out = vec![(PML4_ADDR, pml4)];
    for (i, entry) in pdpt.iter_mut().take(4).enumerate() {
        let pd_addr = PD_ADDR + i as u64 * 0x1000;
        *entry = pd_addr | PRESENT_RW;
        let mut pd = [0u64; 512];
        for (j, pde) in pd.iter_mut().enumerate() {
            let phys = ((i as u64) << 30) | ((j as u64) << 21);
            *pde = phys | PRESENT_RW | PAGE_SIZE_2M;
        }
        out.push((pd_addr, pd));
    }
    out.insert(1, (PDPT_ADDR, pdpt));
    out
}

/// Writes the tables into guest memory.
pub fn write(mem: &GuestMemoryMmap) -> Result<(), vm_memory::GuestMemoryError> {
    let mut page = [0u8; 4096];
    for (addr, entries) in tables() {
        for (chunk, e) in page.chunks_exact_mut(8).zip(entries) {
            chunk.copy_from_slice(&e.to_le_bytes());
        }
        mem.write_slice(&page, GuestAddress(addr))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks the tables like the MMU does for a 2 MiB mapping.
    fn translate(tables: &[(u64, [u64; 512])], va: u64) -> Option<u64> {
        let page = |addr: u64| tables.iter().find(|t| t.0 == addr).map(|t| t.1);
        let pml4e = page(PML4_ADDR)?[((va >> 39) & 511) as usize];
        if pml4e & 1 == 0 {
            return None;
        }
        let pdpte = page(pml4e & !0xfff)?[((va >> 30) & 511) as usize];
        if pdpte & 1 == 0 {
            return None;
        }
        let pde = page(pdpte & !0xfff)?[((va >> 21) & 511) as usize];
        (pde & 0x81 == 0x81)
            .then_some((pde & !0x1f_ffff & !0x8000_0000_0000_0fff) | (va & 0x1f_ffff))
    }

    #[test]
    fn identity_maps_the_first_4_gib() {
        let t = tables();
        assert_eq!(t.len(), 6);
        for va in [
            0,
            0x10_0000,
            0x1234_5678,
            0xbfff_ffff,
            0xfee0_0000,
            0xffff_ffff,
        ] {
            assert_eq!(translate(&t, va), Some(va), "{va:#x}");
        }
        assert_eq!(translate(&t, 1 << 32), None);
    }
}

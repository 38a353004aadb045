//! The identity map. `entry.rs` maps the first 4 GiB statically (2 MiB user pages, the 32-bit
//! MMIO hole uncached); ring 3 extends it over RAM above 4 GiB by filling PDPT entries that were
//! not present (no TLB flush needed). It uses 2 MiB pages only: a nested KVM may advertise 1 GiB
//! pages in CPUID and still fault on them.

use crate::bootinfo::BootInfo;
use core::sync::atomic::{AtomicU64, Ordering};

const PRESENT_RW_USER: u64 = 0x7;
const HUGE: u64 = 1 << 7;
const GIB: u64 = 1 << 30;
/// One PDPT: the map reaches at most 512 GiB.
const MAX_TOP: u64 = 512 * GIB;

unsafe extern "C" {
    static boot_pml4: u8;
    static boot_pdpt: u8;
}

static MAPPED_TOP: AtomicU64 = AtomicU64::new(4 * GIB);

/// One past the highest identity-mapped address.
pub fn mapped_top() -> u64 {
    MAPPED_TOP.load(Ordering::Relaxed)
}

/// The PML4's physical address (the APs load it).
pub fn cr3() -> u64 {
    core::ptr::addr_of!(boot_pml4) as u64
}

/// Maps `[4 GiB, RAM top)` (capped at 512 GiB). Returns the new mapped top, or `None` when the
/// page directories for it do not fit in RAM.
///
/// # Safety
/// BSP only, before any AP runs.
pub unsafe fn extend(boot: &BootInfo) -> Option<u64> {
    let top = boot.ram_top().checked_next_multiple_of(GIB)?.min(MAX_TOP);
    let pdpt = core::ptr::addr_of!(boot_pdpt) as *mut u64;
    for g in 4..top / GIB {
        let base = g * GIB;
        // SAFETY: BSP only (caller's contract).
        let pd = unsafe { crate::heap::alloc(boot, 4096, 4096) }?;
        for i in 0..512u64 {
            let pde = (base + (i << 21)) | PRESENT_RW_USER | HUGE;
            // SAFETY: `pd` is a fresh heap page, below 4 GiB or already mapped.
            unsafe { (pd as *mut u64).add(i as usize).write_volatile(pde) };
        }
        let entry = pd | PRESENT_RW_USER;
        // SAFETY: the PDPT is identity-mapped user RAM; entry `g` (4 <= g < 512) was not present,
        // so no translation of it is cached.
        unsafe { pdpt.add(g as usize).write_volatile(entry) };
    }
    MAPPED_TOP.store(top.max(4 * GIB), Ordering::Relaxed);
    Some(top)
}

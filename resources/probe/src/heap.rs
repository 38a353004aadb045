//! A bump allocator over the RAM after the probe's image: page tables, descriptor tables, stacks
//! and workload buffers. It never frees; it skips the initrd and the command line and stays inside RAM regions.

use crate::bootinfo::BootInfo;
use crate::global::Global;

/// Bytes of the command line kept clear of allocations (the longest the probe reads).
pub const CMDLINE_MAX: u64 = 4096;

static NEXT: Global<u64> = Global::new(0);

unsafe extern "C" {
    static __image_end: u8;
}

/// Starts allocating at the end of the image.
///
/// # Safety
/// BSP only, before any AP runs.
pub unsafe fn init() {
    // SAFETY: single-threaded boot phase (caller's contract); only the symbol's address is used.
    unsafe { NEXT.set(core::ptr::addr_of!(__image_end) as u64) }
}

/// Allocates `size` bytes aligned to `align` (a power of two) in RAM, skipping the initrd and
/// the command line.
/// The memory is not zeroed. Returns `None` if no RAM region after the image fits.
///
/// # Safety
/// BSP only, before any AP runs (the allocator is not thread-safe).
pub unsafe fn alloc(boot: &BootInfo, size: u64, align: u64) -> Option<u64> {
    let mut at = NEXT.get().checked_next_multiple_of(align)?;
    let (rd_start, rd_len) = boot.initrd;
    for _ in 0..=boot.nregions + 1 {
        let end = at.checked_add(size)?;
        if rd_len > 0 && at < rd_start.saturating_add(rd_len) && rd_start < end {
            at = rd_start
                .saturating_add(rd_len)
                .checked_next_multiple_of(align)?;
            continue;
        }
        if boot.is_ram(at, end) {
            // SAFETY: single-threaded by the caller's contract.
            unsafe { NEXT.set(end) };
            return Some(at);
        }
        // Try the next RAM region that starts above `at`.
        let next = boot
            .regions()
            .iter()
            .filter(|r| r.kind == crate::bootinfo::E820_RAM && r.start > at)
            .map(|r| r.start)
            .min()?;
        at = next.checked_next_multiple_of(align)?;
    }
    None
}

/// Like [`alloc`], and zeroes the memory.
///
/// # Safety
/// As for [`alloc`].
pub unsafe fn alloc_zeroed(boot: &BootInfo, size: u64, align: u64) -> Option<u64> {
    // SAFETY: the caller's contract is `alloc`'s.
    let at = unsafe { alloc(boot, size, align) }?;
    // SAFETY: `[at, at + size)` is RAM just handed out by the allocator, identity-mapped, and
    // nothing else uses it.
    unsafe { core::ptr::write_bytes(at as *mut u8, 0, size as usize) };
    Some(at)
}

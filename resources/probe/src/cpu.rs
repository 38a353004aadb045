//! Ring-3 side of the CPU setup done in `entry.rs`: selectors, TSSs for the APs, halting, and
//! the report of an exception.

use core::arch::asm;

/// Kernel code selector.
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data selector.
pub const KERNEL_DS: u16 = 0x10;
/// User data selector (RPL 3).
pub const USER_DS: u16 = 0x18 | 3;
/// User code selector (RPL 3).
pub const USER_CS: u16 = 0x20 | 3;
/// First TSS selector; CPU `i` (BSP = 0) uses `TSS_BASE + 16 * i`.
pub const TSS_BASE: u16 = 0x28;
/// Most CPUs the probe brings up.
pub const MAX_CPUS: usize = 256;
/// GDT size in 8-byte entries: 5 segments and a 16-byte TSS descriptor per CPU.
pub const GDT_ENTRIES: usize = 5 + 2 * MAX_CPUS;
/// Bytes of a TSS with its I/O permission bitmap (all ports allowed) and the bitmap's closing
/// 0xff byte, minus one: the TSS descriptor's limit.
pub const TSS_LIMIT: u64 = 104 + 8192;

unsafe extern "C" {
    static gdt: u8;
}

/// A 64-bit TSS.
#[repr(C, packed(4))]
#[derive(Clone, Copy)]
struct Tss {
    reserved0: u32,
    rsp: [u64; 3],
    reserved1: u64,
    ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    iomap_base: u16,
}

impl Tss {
    /// A TSS with ring-0 stack `rsp0`, exception stack `ist1` and no I/O bitmap.
    const fn new(rsp0: u64, ist1: u64) -> Self {
        Self {
            reserved0: 0,
            rsp: [rsp0, 0, 0],
            reserved1: 0,
            ist: [ist1, 0, 0, 0, 0, 0, 0],
            reserved2: 0,
            reserved3: 0,
            iomap_base: core::mem::size_of::<Tss>() as u16,
        }
    }
}

/// Writes a TSS with ring-0 stack `rsp0`, exception stack `ist1` and an I/O bitmap that allows
/// every port at `at` (`TSS_LIMIT + 1` bytes).
///
/// # Safety
/// `at` is RAM the caller owns, `TSS_LIMIT + 1` bytes long.
pub unsafe fn write_tss(at: u64, rsp0: u64, ist1: u64) {
    let p = at as *mut u8;
    // SAFETY: the caller owns the `TSS_LIMIT + 1` bytes at `at`.
    unsafe {
        core::ptr::write_bytes(p, 0, TSS_LIMIT as usize);
        (p as *mut Tss).write_unaligned(Tss::new(rsp0, ist1));
        p.add(TSS_LIMIT as usize).write(0xff);
    }
}

/// Installs the TSS at `tss` as CPU `cpu`'s descriptor (GDT slot `TSS_BASE + 16 * cpu`).
///
/// # Safety
/// `0 < cpu < MAX_CPUS`, CPU `cpu` has not loaded its TR yet, and no other CPU writes the GDT.
pub unsafe fn set_tss(cpu: usize, tss: u64) {
    let limit = TSS_LIMIT;
    let low = (limit & 0xffff)
        | ((tss & 0xff_ffff) << 16)
        | (0x89 << 40)
        | (((limit >> 16) & 0xf) << 48)
        | (((tss >> 24) & 0xff) << 56);
    let slot =
        (core::ptr::addr_of!(gdt) as *mut u64).wrapping_add(usize::from(TSS_BASE) / 8 + 2 * cpu);
    // SAFETY: the GDT is identity-mapped, user-accessible RAM of GDT_ENTRIES entries, and the
    // slot (inside it for cpu < MAX_CPUS) is not in use by any CPU yet.
    unsafe {
        slot.write_volatile(low);
        slot.add(1).write_volatile(tss >> 32);
    }
}

/// Stops this CPU for good: from ring 3, `hlt` raises #GP, whose handler halts the CPU.
pub fn halt() -> ! {
    // SAFETY: `hlt` either halts (CPL0) or traps to the handler that halts; it never returns.
    unsafe { asm!("hlt", options(noreturn, nomem, nostack)) }
}

/// The current privilege level (CS.RPL).
pub fn cpl() -> u16 {
    let cs: u16;
    // SAFETY: reading CS has no side effects.
    unsafe { asm!("mov {:x}, cs", out(reg) cs, options(nomem, nostack, preserves_flags)) };
    cs & 3
}

/// RFLAGS.IOPL.
pub fn iopl() -> u64 {
    let flags: u64;
    // SAFETY: pushfq/pop only touch the stack slot they use.
    unsafe { asm!("pushfq", "pop {}", out(reg) flags, options(preserves_flags)) };
    (flags >> 12) & 3
}

/// Reached in ring 3 from `exc_common` with the saved frame: reports and fails the run.
pub extern "C" fn exception_report(frame: *const u64) -> ! {
    // SAFETY: `exc_common` passes `exc_frame`, 8 saved u64s: vector, error code, RIP, CS,
    // RFLAGS, RSP, SS, CR2.
    let f = unsafe { core::slice::from_raw_parts(frame, 8) };
    crate::println!(
        "PROBE FAIL exception: vector={} error={:#x} rip={:#x} cs={:#x} rsp={:#x} cr2={:#x}",
        f[0],
        f[1],
        f[2],
        f[3],
        f[5],
        f[7]
    );
    crate::println!("PROBE FAIL");
    crate::exit(1)
}

//! Bringing up the APs: INIT-SIPI-SIPI through the xAPIC (MMIO, from ring 3) into a real-mode
//! trampoline at 0x8000 that enters long mode on the BSP's page tables; each AP then loads the
//! shared GDT/IDT and its own TSS, drops to ring 3, checks in, and halts.

use crate::bootinfo::BootInfo;
use crate::checks::Why;
use crate::cpu::{self, MAX_CPUS};
use crate::{info, println, tsc};
use core::arch::global_asm;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Where the trampoline is copied; the SIPI vector is its page number.
const TRAMPOLINE: u64 = 0x8000;
/// How long to wait for the APs to check in.
const WAIT_US: u64 = 2_000_000;
/// Per-AP memory: its TSS page, ring-0 stack, exception stack and ring-3 stack.
const AP_TSS_BYTES: u64 = (cpu::TSS_LIMIT + 1).next_multiple_of(4096);
const AP_KSTACK: u64 = 8 << 10;
const AP_ISTACK: u64 = 8 << 10;
const AP_USTACK: u64 = 16 << 10;
const AP_BLOCK: u64 = AP_TSS_BYTES + AP_KSTACK + AP_ISTACK + AP_USTACK;

/// APs that reached ring 3.
static ONLINE: AtomicU32 = AtomicU32::new(0);
/// Number of APs started (valid trampoline tickets are below it).
static AP_COUNT: AtomicU32 = AtomicU32::new(0);
/// Per AP ticket: its memory block.
static BLOCKS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Per AP ticket: its APIC id + 1 once it checked in from ring 3.
static ARRIVED: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

// The trampoline starts with its data at fixed offsets (the code addresses them absolutely):
// +8 the table of ring-0 stack tops, +16 CR3, +20 the ticket counter, +24 a GDT, +48 its GDTR.
global_asm!(
    r#"
    .section .text.ap_tramp, "ax"
    .code16
    .globl ap_tramp_start
ap_tramp_start:
    jmp 3f
    .org ap_tramp_start + 8
    .globl tramp_stacks
tramp_stacks:
    .quad 0
    .globl tramp_cr3
tramp_cr3:
    .long 0
    .globl tramp_ticket
tramp_ticket:
    .long 0
tramp_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
    .org ap_tramp_start + 48
    .short 23
    .long {base} + 24
3:
    cli
    xor ax, ax
    mov ds, ax
    lgdt [{base} + 48]
    mov eax, 0x620
    mov cr4, eax
    mov eax, dword ptr [{base} + 16]
    mov cr3, eax
    mov ecx, 0xc0000080
    rdmsr
    or eax, 0x100
    wrmsr
    mov eax, 0x80000023
    mov cr0, eax
    .byte 0x66, 0xea
    .long {base} + (tramp_long - ap_tramp_start)
    .short 0x08
    .code64
tramp_long:
    mov eax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov eax, 1
    lock xadd dword ptr [{base} + 20], eax
    mov rdx, qword ptr [{base} + 8]
    mov rsp, qword ptr [rdx + rax * 8]
    mov edi, eax
    mov rax, offset ap_entry64
    jmp rax
    .globl ap_tramp_end
ap_tramp_end:
    .text
"#,
    base = const TRAMPOLINE,
);

unsafe extern "C" {
    static ap_tramp_start: u8;
    static ap_tramp_end: u8;
    static tramp_stacks: u8;
    static tramp_cr3: u8;
    static tramp_ticket: u8;
    /// The xAPIC's MMIO base, from IA32_APIC_BASE (entry.rs).
    static apic_base: u64;
    /// Ring-3 stack top minus ring-0 stack top for the APs (read by `ap_entry64`).
    static ap_ustack_offset: u64;
}

fn apic() -> u64 {
    // SAFETY: written once at CPL0 before ring 3 ran; read-only afterwards.
    unsafe { core::ptr::addr_of!(apic_base).read_volatile() }
}

/// An AP's first Rust code, in ring 3 (from `ap_entry64`): checks in with its APIC id, then
/// halts.
pub extern "C" fn ap_main(ticket: u64) -> ! {
    if ticket >= u64::from(AP_COUNT.load(Ordering::Acquire)) {
        cpu::halt();
    }
    let id = lapic_read(0x20) >> 24;
    ARRIVED[ticket as usize].store(id + 1, Ordering::Release);
    ONLINE.fetch_add(1, Ordering::AcqRel);
    cpu::halt()
}

fn lapic_read(reg: u64) -> u32 {
    // SAFETY: the LAPIC page is identity-mapped (uncached, user) and the register is readable.
    unsafe { ((apic() + reg) as *const u32).read_volatile() }
}

fn lapic_write(reg: u64, value: u32) {
    // SAFETY: as in `lapic_read`; writes go to the BSP's own LAPIC.
    unsafe { ((apic() + reg) as *mut u32).write_volatile(value) }
}

/// Sends an IPI (ICR low `low`) to APIC id `dest` and waits (bounded) for delivery.
fn ipi(dest: u32, low: u32) {
    lapic_write(0x310, dest << 24);
    lapic_write(0x300, low);
    for _ in 0..100_000 {
        if lapic_read(0x300) & (1 << 12) == 0 {
            break;
        }
        core::hint::spin_loop();
    }
}

/// The `smp` check: finds the CPUs, starts every AP and waits for all of them to check in.
pub fn check(boot: &BootInfo) -> Result<(), Why> {
    let cpus = crate::acpi::find_cpus(boot)
        .ok_or(Why::Text("neither a MADT nor an MP table lists the CPUs"))?;
    info!("cpus", "{}", cpus.count + cpus.dropped);
    info!("cpus_source", "{}", cpus.source);
    if cpus.dropped > 0 {
        return Err(Why::At(
            "more CPUs than the probe supports; dropped",
            cpus.dropped as u64,
        ));
    }
    let bsp = lapic_read(0x20) >> 24;
    let mut aps = [0u32; MAX_CPUS];
    let mut n = 0;
    for &id in cpus.ids().iter().filter(|&&id| id != bsp) {
        if id > 0xfe {
            return Err(Why::At("an AP's APIC id is beyond xAPIC reach:", id.into()));
        }
        aps[n] = id;
        n += 1;
    }
    let aps = &aps[..n];
    if !aps.is_empty() {
        start_aps(boot, aps)?;
    }
    let online = ONLINE.load(Ordering::Acquire) as usize + 1;
    if online == cpus.count {
        println!("PROBE ok smp: {online} cpus online");
        return Ok(());
    }
    crate::print!(
        "PROBE FAIL smp: {online} of {} cpus online; missing APIC ids:",
        cpus.count
    );
    for &id in aps {
        if !ARRIVED[..n]
            .iter()
            .any(|a| a.load(Ordering::Acquire) == id + 1)
        {
            crate::print!(" {id}");
        }
    }
    println!();
    Err(Why::Reported)
}

fn start_aps(boot: &BootInfo, aps: &[u32]) -> Result<(), Why> {
    let n = aps.len() as u64;
    if !boot.is_ram(TRAMPOLINE, TRAMPOLINE + 4096) {
        return Err(Why::At("no RAM for the AP trampoline at", TRAMPOLINE));
    }
    // SAFETY: BSP only; no AP runs yet.
    let blocks = unsafe { crate::heap::alloc(boot, n * AP_BLOCK, 4096) }
        .ok_or(Why::Text("no RAM for the APs' stacks"))?;
    // SAFETY: as above.
    // Zeroed, MAX_CPUS entries: `ap_entry64` parks a CPU whose ticket has no stack.
    let table = unsafe { crate::heap::alloc_zeroed(boot, MAX_CPUS as u64 * 8, 8) }
        .ok_or(Why::Text("no RAM for the AP table"))?;
    for i in 0..n {
        let block = blocks + i * AP_BLOCK;
        // SAFETY: `block` is fresh RAM owned by AP `i`; its TSS and descriptor are written
        // before the AP starts; slot i + 1 < MAX_CPUS as n < MAX_CPUS.
        unsafe {
            cpu::write_tss(
                block,
                block + AP_TSS_BYTES + AP_KSTACK,
                block + AP_TSS_BYTES + AP_KSTACK + AP_ISTACK,
            );
            cpu::set_tss(i as usize + 1, block);
            (table as *mut u64)
                .add(i as usize)
                .write(block + AP_TSS_BYTES + AP_KSTACK);
        }
        BLOCKS[i as usize].store(block, Ordering::Release);
    }
    AP_COUNT.store(n as u32, Ordering::Release);
    let src = core::ptr::addr_of!(ap_tramp_start);
    let len = core::ptr::addr_of!(ap_tramp_end) as u64 - src as u64;
    let field = |sym: *const u8| TRAMPOLINE + (sym as u64 - src as u64);
    // SAFETY: the trampoline page is RAM (checked) that nothing else uses once boot info is
    // parsed; the fields are inside the copied bytes.
    unsafe {
        core::ptr::copy_nonoverlapping(src, TRAMPOLINE as *mut u8, len as usize);
        (field(core::ptr::addr_of!(tramp_stacks)) as *mut u64).write_volatile(table);
        (field(core::ptr::addr_of!(tramp_cr3)) as *mut u32)
            .write_volatile(crate::paging::cr3() as u32);
        (core::ptr::addr_of!(ap_ustack_offset) as *mut u64).write_volatile(AP_ISTACK + AP_USTACK);
        (field(core::ptr::addr_of!(tramp_ticket)) as *mut u32).write_volatile(0);
    }
    core::sync::atomic::fence(Ordering::SeqCst);
    let hz = tsc::hz();
    for &id in aps {
        ipi(id, 0x4500); // INIT, level assert
    }
    tsc::delay_us(hz, 10_000);
    let vector = (TRAMPOLINE >> 12) as u32;
    for _ in 0..2 {
        for &id in aps {
            ipi(id, 0x4600 | vector); // STARTUP
        }
        tsc::delay_us(hz, 200);
    }
    let start = tsc::now();
    let limit = hz.unwrap_or(3_000_000_000) / 1_000_000 * WAIT_US;
    while (ONLINE.load(Ordering::Acquire) as u64) < n && tsc::now().wrapping_sub(start) < limit {
        core::hint::spin_loop();
    }
    Ok(())
}

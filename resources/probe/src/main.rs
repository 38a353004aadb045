//! Veil's probe guest: a small freestanding x86_64 kernel (see docs/probe.md).
//!
//! The BSP does the least it can at CPL0 (on nested KVM, CPL0 is emulated and slow): a few
//! dozen assembly instructions in `entry.rs` load static tables and drop to ring 3, where
//! everything else runs: output, parsing, checks, starting the APs and the measured workloads.
#![no_std]
#![no_main]

mod acpi;
mod bootinfo;
mod checks;
mod cmdline;
mod cpu;
mod entry;
mod global;
mod heap;
mod mem;
mod pagestate;
mod paging;
mod phys;
mod port;
mod serial;
mod serial_in;
mod smp;
mod tsc;
mod virtio;
mod work;

use bootinfo::BootInfo;
use core::panic::PanicInfo;
use global::Global;

/// Debug exit port: a write of `v` ends Veil with status `v`.
const EXIT_PORT: u16 = 0xf4;

/// What the loader told the probe, filled by the BSP before anything else runs.
pub static BOOT: Global<BootInfo> = Global::new(BootInfo::empty());

/// The BSP's first Rust code, already in ring 3 (see `entry.rs`), with the boot protocol and
/// the loader's info pointer (`hvm_start_info` or `boot_params`).
pub extern "C" fn probe_main(proto: u32, info: u64) -> ! {
    serial::init();
    // SAFETY: only the BSP runs; nothing else references BOOT yet.
    let boot = unsafe { BOOT.get_mut() };
    if let Err(e) = bootinfo::parse(boot, proto, info) {
        fail_early(e);
    }
    // SAFETY: BSP only, before any AP runs.
    unsafe {
        heap::init();
        if paging::extend(boot).is_none() {
            fail_early("no RAM for the page directories above 4 GiB");
        }
    }
    checks::run_all(BOOT.get_ref())
}

fn fail_early(why: &str) -> ! {
    println!("PROBE FAIL boot: {why}");
    println!("PROBE FAIL");
    exit(1)
}

/// Writes the status to the debug exit port, then halts for good.
pub fn exit(status: u8) -> ! {
    port::outl(EXIT_PORT, u32::from(status));
    cpu::halt()
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    println!("PROBE FAIL panic: {}", info);
    println!("PROBE FAIL");
    exit(1)
}

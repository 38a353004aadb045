//! Veil's probe guest: a small freestanding x86_64 kernel (see docs/probe.md).
#![no_std]
#![no_main]

mod entry;
mod mem;
mod port;
mod serial;

use core::panic::PanicInfo;

/// Debug exit port: a write of `v` ends Veil with status `v`.
const EXIT_PORT: u16 = 0xf4;

/// Called by `common64` in long mode at CPL0 with the boot protocol and its info pointer.
pub extern "C" fn probe_start(proto: u32, info: u64) -> ! {
    serial::init();
    println!("PROBE ok boot");
    let _ = info;
    info!(
        "boot",
        "{}",
        if proto == entry::BOOT_PVH {
            "pvh"
        } else {
            "linux"
        }
    );
    println!("PROBE PASS");
    exit(0)
}

/// Writes the status to the debug exit port, then halts for good.
pub fn exit(status: u8) -> ! {
    port::outl(EXIT_PORT, u32::from(status));
    loop {
        // SAFETY: runs at CPL0 here; halting with interrupts off stops this CPU for good.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) }
    }
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    println!("PROBE FAIL panic: {}", info);
    println!("PROBE FAIL");
    exit(1)
}

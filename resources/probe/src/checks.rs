//! Ring 3: the command line, the checks and the final verdict.

use crate::bootinfo::{BootInfo, E820_RAM};
use crate::cmdline::{self, CHECKS, Config};
use crate::{cpu, info, println};

/// Longest command line the probe reads.
const CMDLINE_MAX: usize = crate::heap::CMDLINE_MAX as usize;

/// Reports the boot facts, parses the command line, runs the chosen checks in `CHECKS` order
/// and ends the run.
pub fn run_all(boot: &BootInfo) -> ! {
    info!(
        "boot",
        "{}",
        if boot.proto == crate::entry::BOOT_PVH {
            "pvh"
        } else {
            "linux"
        }
    );
    let mut buf = [0u8; CMDLINE_MAX];
    let n = crate::bootinfo::copy_cmdline(boot.cmdline, &mut buf);
    let Ok(line) = core::str::from_utf8(&buf[..n]) else {
        println!("PROBE FAIL cmdline: not UTF-8");
        finish(false)
    };
    info!("cmdline", "{}", Printable(line));
    info!("ram_bytes", "{}", boot.ram_bytes());
    match crate::tsc::hz() {
        Some(hz) => info!("tsc_hz", "{}", hz),
        None => info!("tsc_hz", "unknown"),
    }
    let cfg = match cmdline::parse(line) {
        Ok(cfg) => cfg,
        Err(e) => {
            println!("PROBE FAIL cmdline: {e}");
            finish(false)
        }
    };
    let mut ok = true;
    for name in CHECKS {
        if cfg.runs(name) {
            ok &= run(name, boot, &cfg);
        }
    }
    finish(ok)
}

fn run(name: &str, boot: &BootInfo, cfg: &Config) -> bool {
    let result = match name {
        "boot" => check_boot(boot),
        "mem" => check_mem(boot),
        "smp" => crate::smp::check(boot),
        "ring3" => check_ring3(),
        "loop" => crate::work::run_loop(cfg),
        "membw" => crate::work::membw(boot, cfg),
        "memlat" => crate::work::memlat(boot, cfg),
        "blk" => crate::virtio::blk::check(cfg),
        "blkbench" => crate::virtio::blkbench::run(cfg),
        "rng" => crate::virtio::rng::check(cfg),
        "console" => crate::virtio::console::check(cfg),
        "net" => crate::virtio::net::check(cfg),
        "netbench" => crate::virtio::netbench::run(cfg),
        "vsock" => crate::virtio::vsock::check(cfg),
        "irq" => crate::virtio::irq::check(cfg),
        "serial_in" => crate::serial_in::check(),
        "console_in" => crate::virtio::console::check_input(cfg),
        "pagestate" => crate::pagestate::check(),
        _ => Err(Why::Text("no such check")),
    };
    match result {
        Ok(()) => true,
        Err(Why::Reported) => false,
        Err(why) => {
            println!("PROBE FAIL {name}: {why}");
            false
        }
    }
}

/// Text with control characters shown as `?`, so that it stays on one line.
pub struct Printable<'a>(pub &'a str);

impl core::fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use core::fmt::Write as _;
        self.0
            .chars()
            .try_for_each(|c| f.write_char(if c.is_control() { '?' } else { c }))
    }
}

/// Why a check failed: static text, or text with a number.
#[derive(Debug)]
pub enum Why {
    /// A fixed reason.
    Text(&'static str),
    /// A reason with an address or count.
    At(&'static str, u64),
    /// The check printed its own `PROBE FAIL` line.
    Reported,
}

impl core::fmt::Display for Why {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Why::Text(t) => f.write_str(t),
            Why::At(t, v) => write!(f, "{t} {v:#x}"),
            Why::Reported => Ok(()),
        }
    }
}

fn check_boot(boot: &BootInfo) -> Result<(), Why> {
    unsafe extern "C" {
        static __image_start: u8;
        static __image_end: u8;
    }
    let (start, end) = (
        core::ptr::addr_of!(__image_start) as u64,
        core::ptr::addr_of!(__image_end) as u64,
    );
    if !boot.is_ram(start, end) {
        return Err(Why::At("the image is not in RAM at", start));
    }
    let proto = if boot.proto == crate::entry::BOOT_PVH {
        "pvh"
    } else {
        "linux"
    };
    println!("PROBE ok boot: {proto}");
    Ok(())
}

/// Writes and reads back (then restores) the first and last words of every RAM region.
fn check_mem(boot: &BootInfo) -> Result<(), Why> {
    let mut regions = 0;
    for r in boot.regions().iter().filter(|r| r.kind == E820_RAM) {
        regions += 1;
        let first = r.start.max(0x1000).next_multiple_of(8);
        let last = (r.end() & !7).saturating_sub(8);
        for addr in [first, last] {
            if addr < r.start || addr + 8 > r.end() || addr + 8 > crate::paging::mapped_top() {
                continue;
            }
            let p = addr as *mut u64;
            // SAFETY: `addr` is 8-byte aligned RAM inside the identity map; the old value is
            // put back, and no other CPU runs while the check does this.
            let (old, seen) = unsafe {
                let old = p.read_volatile();
                let pattern = !old ^ addr.rotate_left(17);
                p.write_volatile(pattern);
                let seen = p.read_volatile() == pattern;
                p.write_volatile(old);
                (old, seen)
            };
            // SAFETY: as above.
            if !seen || unsafe { p.read_volatile() } != old {
                return Err(Why::At("RAM does not hold a written value at", addr));
            }
        }
    }
    if regions == 0 {
        return Err(Why::Text("no RAM in the memory map"));
    }
    info!("ram_regions", "{}", regions);
    println!(
        "PROBE ok mem: {} bytes of RAM in {} regions",
        boot.ram_bytes(),
        regions
    );
    Ok(())
}

fn check_ring3() -> Result<(), Why> {
    if cpu::cpl() != 3 {
        return Err(Why::At("running at CPL", u64::from(cpu::cpl())));
    }
    // Port I/O works through the TSS I/O bitmap whatever IOPL is: some nested KVMs drop the
    // IOPL that iretq sets.
    println!("PROBE ok ring3: cpl=3 iopl={}", cpu::iopl());
    Ok(())
}

/// Prints the verdict and ends the run with status 0 (pass) or 1 (fail).
pub fn finish(ok: bool) -> ! {
    if ok {
        println!("PROBE PASS");
        crate::exit(0)
    }
    println!("PROBE FAIL");
    crate::exit(1)
}

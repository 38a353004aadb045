//! Measured workloads, run in ring 3 on the BSP: `loop` (a tight `dec`/`jnz` loop), `membw`
//! (streaming copy) and `memlat` (pointer chase over a random cyclic permutation).

use crate::bootinfo::BootInfo;
use crate::checks::Why;
use crate::cmdline::Config;
use crate::global::Global;
use crate::tsc::{self, Ratio};
use crate::{info, println};
use core::arch::asm;

/// The workload buffer `(address, bytes)`, allocated on first use and shared by the workloads.
static BUFFER: Global<(u64, u64)> = Global::new((0, 0));
/// Bytes per pointer-chase node: one cache line.
const LINE: u64 = 64;

fn buffer(boot: &BootInfo, bytes: u64) -> Result<u64, Why> {
    let (addr, len) = BUFFER.get();
    if len == bytes {
        return Ok(addr);
    }
    // SAFETY: only the BSP allocates; the APs are halted or never started.
    let addr = unsafe { crate::heap::alloc(boot, bytes, 2 << 20) }
        .ok_or(Why::At("no RAM for a workload buffer of bytes:", bytes))?;
    // SAFETY: only the BSP runs workloads.
    unsafe { BUFFER.set((addr, bytes)) };
    Ok(addr)
}

fn per_ns(cycles: u64, count: u64) -> Option<Ratio> {
    let hz = tsc::hz()?;
    let ns = (u128::from(cycles) * 1_000_000_000 / u128::from(hz)) as u64;
    Some(Ratio(ns, count))
}

/// `loop`: `probe.loop` iterations of `dec`/`jnz`.
pub fn run_loop(cfg: &Config) -> Result<(), Why> {
    let n = cfg.loop_iters;
    let start = tsc::now();
    // SAFETY: a register-only loop.
    unsafe { asm!("2:", "dec {n}", "jnz 2b", n = inout(reg) n => _, options(nomem, nostack)) };
    let cycles = tsc::now().wrapping_sub(start);
    info!("loop_iters", "{}", n);
    info!("loop_cycles", "{}", cycles);
    info!("loop_cycles_per_iter", "{}", Ratio(cycles, n));
    if let Some(ns) = per_ns(cycles, n) {
        info!("loop_ns_per_iter", "{}", ns);
    }
    println!("PROBE ok loop: {} cycles per iteration", Ratio(cycles, n));
    Ok(())
}

/// `membw`: copies the first half of the buffer onto the second half, four times, after one
/// untimed pass that touches every page.
pub fn membw(boot: &BootInfo, cfg: &Config) -> Result<(), Why> {
    const REPS: u64 = 4;
    let buf = buffer(boot, cfg.buf_bytes)?;
    let half = cfg.buf_bytes / 2;
    let (src, dst) = (buf as *mut u8, (buf + half) as *mut u8);
    // SAFETY: both halves are the BSP's own RAM from the heap, identity-mapped and disjoint.
    unsafe {
        core::ptr::write_bytes(src, 0x5a, half as usize);
        core::ptr::copy_nonoverlapping(src, dst, half as usize);
    }
    let start = tsc::now();
    for _ in 0..REPS {
        // SAFETY: as above.
        unsafe { core::ptr::copy_nonoverlapping(src, dst, half as usize) };
    }
    let cycles = tsc::now().wrapping_sub(start);
    // SAFETY: as above; a spot check that the copy happened.
    if unsafe { dst.add(half as usize - 1).read_volatile() } != 0x5a {
        return Err(Why::Text(
            "the copied buffer does not hold the source bytes",
        ));
    }
    let bytes = half * REPS;
    info!("membw_bytes", "{}", bytes);
    info!("membw_cycles", "{}", cycles);
    info!("membw_bytes_per_kcycle", "{}", Ratio(bytes * 1000, cycles));
    if let Some(hz) = tsc::hz() {
        let mb_s = u128::from(bytes) * u128::from(hz) / u128::from(cycles.max(1)) / 1_000_000;
        info!("membw_mb_s", "{}", mb_s);
    }
    println!(
        "PROBE ok membw: {} bytes per kcycle",
        Ratio(bytes * 1000, cycles)
    );
    Ok(())
}

/// `memlat`: one load per cache line of the buffer, following a random cyclic permutation
/// (Sattolo's algorithm) so that every load depends on the previous one.
pub fn memlat(boot: &BootInfo, cfg: &Config) -> Result<(), Why> {
    let buf = buffer(boot, cfg.buf_bytes)?;
    let n = cfg.buf_bytes / LINE;
    let node = |i: u64| (buf + i * LINE) as *mut u64;
    let mut seed = tsc::now() | 1;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // SAFETY: every node index is below `n`, so every node is inside the BSP's own buffer.
    unsafe {
        for i in 0..n {
            node(i).write(i);
        }
        for i in (1..n).rev() {
            let j = rand() % i;
            let (a, b) = (node(i).read(), node(j).read());
            node(i).write(b);
            node(j).write(a);
        }
        for i in 0..n {
            let next = node(i).read();
            node(i).write(buf + next * LINE);
        }
    }
    let mut p = buf;
    let start = tsc::now();
    // SAFETY: every node holds the address of another node in the buffer.
    unsafe {
        asm!("2:", "mov {p}, [{p}]", "dec {c}", "jnz 2b", p = inout(reg) p, c = inout(reg) n => _,
             options(nostack, readonly));
    }
    let cycles = tsc::now().wrapping_sub(start);
    if p != buf {
        return Err(Why::At(
            "the chase did not come back to its start; it ended at",
            p,
        ));
    }
    info!("memlat_loads", "{}", n);
    info!("memlat_cycles_per_load", "{}", Ratio(cycles, n));
    if let Some(ns) = per_ns(cycles, n) {
        info!("memlat_ns_per_load", "{}", ns);
    }
    println!("PROBE ok memlat: {} cycles per load", Ratio(cycles, n));
    Ok(())
}

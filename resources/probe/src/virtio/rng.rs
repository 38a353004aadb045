//! The `rng` check: two 64-byte reads from virtio-rng, both filled, different; then the average
//! cycles of a polled 64-byte read.

use super::virtqueue::Buf;
use super::{Device, NO_VECTOR, TIMED_REQUESTS, bytes, dma, find_for, kind};
use crate::checks::Why;
use crate::cmdline::Config;
use crate::{info, println};

/// Bytes per read.
const READ: usize = 64;

/// Runs the `rng` check.
pub fn check(cfg: &Config) -> Result<(), Why> {
    let t = find_for("rng", kind::RNG, cfg)?;
    let dev = Device::init(t, 0)?;
    let mut vq = dev.queue(0, NO_VECTOR)?;
    vq.set_interrupts(false);
    dev.ready()?;
    let buf = dma(2 * READ as u64)?;
    for i in 0..2 {
        let n = dev.transact(&mut vq, &[Buf::write(buf + (i * READ) as u64, READ as u32)])?;
        if n as usize != READ {
            dev.reset();
            return Err(Why::At("a 64-byte read returned bytes:", n.into()));
        }
    }
    let timed = dma(READ as u64)?;
    let cycles = dev.time_requests(&mut vq, &[Buf::write(timed, READ as u32)], TIMED_REQUESTS);
    dev.reset();
    info!("rng_read_cycles", "{}", cycles?);
    // SAFETY: `buf` is this check's DMA memory; the device is reset and no longer writes it.
    let b = unsafe { bytes(buf, 2 * READ) };
    let (a, c) = b.split_at(READ);
    if a.iter().all(|&x| x == 0) || c.iter().all(|&x| x == 0) {
        return Err(Why::Text("a read left its buffer all zeros"));
    }
    if a == c {
        return Err(Why::Text("two reads returned the same bytes"));
    }
    println!("PROBE ok rng");
    Ok(())
}

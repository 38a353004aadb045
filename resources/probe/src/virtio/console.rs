//! The `console` check: one line on port 0's transmit queue of virtio-console.

use super::virtqueue::Buf;
use super::{Device, NO_VECTOR, bytes, dma, find_for, kind};
use crate::checks::Why;
use crate::cmdline::Config;
use crate::println;

/// What the probe writes.
pub const MESSAGE: &[u8] = b"virtio-console: hello from the probe\n";

/// Runs the `console` check.
pub fn check(cfg: &Config) -> Result<(), Why> {
    let t = find_for("console", kind::CONSOLE, cfg)?;
    let dev = Device::init(t, 0)?;
    // Port 0: receiveq 0, transmitq 1 (no MULTIPORT).
    let mut rx = dev.queue(0, NO_VECTOR)?;
    let mut tx = dev.queue(1, NO_VECTOR)?;
    rx.set_interrupts(false);
    tx.set_interrupts(false);
    dev.ready()?;
    let buf = dma(4096)?;
    // SAFETY: fresh DMA memory no device has seen yet.
    unsafe { bytes(buf, MESSAGE.len()) }.copy_from_slice(MESSAGE);
    let r = dev.transact(&mut tx, &[Buf::read(buf, MESSAGE.len() as u32)]);
    dev.reset();
    r?;
    println!("PROBE ok console");
    Ok(())
}

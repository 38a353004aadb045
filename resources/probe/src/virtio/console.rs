//! The `console` check: one line on port 0's transmit queue of virtio-console. The
//! `console_in` check: host input from port 0's receive queue, up to a newline.

use super::virtqueue::{Buf, Virtqueue};
use super::{Device, Hex, NO_VECTOR, bytes, dma, find_for, kind};
use crate::checks::Why;
use crate::cmdline::Config;
use crate::tsc::Deadline;
use crate::{info, println};

/// What the probe writes.
pub const MESSAGE: &[u8] = b"virtio-console: hello from the probe\n";

/// The first console for check `check`, ready, with port 0's polled receiveq (queue 0) and
/// transmitq (queue 1); no MULTIPORT.
fn open(check: &str, cfg: &Config) -> Result<(Device, Virtqueue, Virtqueue), Why> {
    let t = find_for(check, kind::CONSOLE, cfg)?;
    let dev = Device::init(t, 0)?;
    let mut rx = dev.queue(0, NO_VECTOR)?;
    let mut tx = dev.queue(1, NO_VECTOR)?;
    rx.set_interrupts(false);
    tx.set_interrupts(false);
    dev.ready()?;
    Ok((dev, rx, tx))
}

/// Runs the `console` check.
pub fn check(cfg: &Config) -> Result<(), Why> {
    let (dev, _rx, mut tx) = open("console", cfg)?;
    let buf = dma(4096)?;
    // SAFETY: fresh DMA memory no device has seen yet.
    unsafe { bytes(buf, MESSAGE.len()) }.copy_from_slice(MESSAGE);
    let r = dev.transact(&mut tx, &[Buf::read(buf, MESSAGE.len() as u32)]);
    dev.reset();
    r?;
    println!("PROBE ok console");
    Ok(())
}

/// Receive buffers `console_in` keeps posted, and the bytes of each (small, so that a line
/// spans several).
const RX_BUFS: u64 = 8;
const RX_LEN: u32 = 64;
/// Most bytes `console_in` reads before giving up on a newline.
pub const INPUT_MAX: usize = 4096;
/// How long `console_in` waits for the next receive buffer to come back.
const INPUT_WAIT_MS: u64 = 20_000;

/// Runs the `console_in` check: posts `RX_BUFS` receive buffers, polls the used ring and
/// re-posts each buffer it empties, until a newline (excluded) or `INPUT_MAX` bytes.
pub fn check_input(cfg: &Config) -> Result<(), Why> {
    let (dev, mut rx, _tx) = open("console_in", cfg)?;
    let r = receive(&dev, &mut rx);
    dev.reset();
    let (out, n) = r?;
    // SAFETY: the device is reset: it no longer writes the buffers.
    let got = unsafe { bytes(out, n) };
    info!("console_in_bytes", "{}", n);
    info!("console_in", "{}", Hex(got));
    println!("PROBE ok console_in: {n} bytes");
    Ok(())
}

/// Collects the input into fresh DMA memory; returns its address and length.
fn receive(dev: &Device, rx: &mut Virtqueue) -> Result<(u64, usize), Why> {
    let bufs = dma(RX_BUFS * u64::from(RX_LEN))?;
    let out = dma(INPUT_MAX as u64)?;
    // The buffer of each head (heads are descriptor ids, below the queue size of at most 256).
    let mut addr_of = [0u64; super::virtqueue::LIMIT as usize];
    for i in 0..RX_BUFS {
        let addr = bufs + i * u64::from(RX_LEN);
        let head = rx.add(&[Buf::write(addr, RX_LEN)])?;
        addr_of[usize::from(head)] = addr;
    }
    dev.t.notify(rx);
    let mut n = 0usize;
    let mut dl = Deadline::after_ms(INPUT_WAIT_MS);
    loop {
        let Some((head, len)) = rx.poll()? else {
            if dl.expired() {
                return Err(Why::At(
                    "no input within 20 s on the receive queue; bytes so far:",
                    n as u64,
                ));
            }
            core::hint::spin_loop();
            continue;
        };
        dl = Deadline::after_ms(INPUT_WAIT_MS);
        let addr = addr_of[usize::from(head)];
        if len > RX_LEN {
            return Err(Why::At(
                "the device wrote more than the buffer holds:",
                len.into(),
            ));
        }
        // SAFETY: the device returned this buffer: it no longer writes it; `out` is ours.
        let (src, dst) = unsafe { (bytes(addr, len as usize), bytes(out, INPUT_MAX)) };
        for &b in src.iter() {
            if b == b'\n' || n == INPUT_MAX {
                return Ok((out, n));
            }
            dst[n] = b;
            n += 1;
        }
        let again = rx.add(&[Buf::write(addr, RX_LEN)])?;
        addr_of[usize::from(again)] = addr;
        dev.t.notify(rx);
    }
}

//! The `netbench` workload on virtio-net: sends `probe.net_frames` broadcast frames of
//! `probe.net_len` bytes (ethertype 0x88b5) on the transmit queue, keeping as many in flight as
//! the queue holds and refilling as completions are polled. The cycles are TSC cycles from the
//! first notification to the last completion; the harness counts what reached the tap.

use super::net::ETHERTYPE;
use super::virtqueue::{Buf, LIMIT};
use super::{Device, NO_VECTOR, REQUEST_MS, bytes, dma, find_for, kind};
use crate::checks::Why;
use crate::cmdline::Config;
use crate::{info, println};

const F_MAC: u64 = 1 << 5;
/// The virtio-net header with VERSION_1.
const HDR: u32 = 12;

/// Runs the `netbench` workload.
pub fn run(cfg: &Config) -> Result<(), Why> {
    let t = find_for("netbench", kind::NET, cfg)?;
    let dev = Device::init(t, F_MAC)?;
    let r = bench(&dev, cfg);
    dev.reset();
    r
}

fn bench(dev: &Device, cfg: &Config) -> Result<(), Why> {
    let mut mac = [0u8; 6];
    dev.config(0, &mut mac);
    let mut rx = dev.queue(0, NO_VECTOR)?;
    let mut tx = dev.queue_up_to(1, NO_VECTOR, LIMIT)?;
    rx.set_interrupts(false);
    tx.set_interrupts(false);
    dev.ready()?;
    // One header and one frame, shared by every request (the device only reads them).
    let mem = dma(2 * 4096)?;
    let len = cfg.net_len;
    // SAFETY: fresh DMA memory no request uses yet: the (zero) header at `mem`, the frame at
    // `mem + 4096`.
    let frame = unsafe { bytes(mem + 4096, len as usize) };
    frame[0..6].fill(0xff);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    for (i, b) in frame[14..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let chain = [Buf::read(mem, HDR), Buf::read(mem + 4096, len)];
    let inflight = u64::from(tx.size() / 2);
    let total = cfg.net_frames;
    let (mut submitted, mut done) = (0u64, 0u64);
    let start = crate::tsc::now();
    while submitted < total.min(inflight) {
        tx.add(&chain)?;
        submitted += 1;
    }
    dev.t.notify(&tx);
    let mut dl = crate::tsc::Deadline::after_ms(REQUEST_MS);
    while done < total {
        let mut refilled = false;
        while tx.poll()?.is_some() {
            done += 1;
            if submitted < total {
                tx.add(&chain)?;
                submitted += 1;
                refilled = true;
            }
        }
        if refilled {
            dev.t.notify(&tx);
            dl = crate::tsc::Deadline::after_ms(REQUEST_MS);
        } else if dl.expired() {
            return Err(Why::At(
                "no transmit completion within 5 s; completed",
                done,
            ));
        }
        core::hint::spin_loop();
    }
    let cycles = crate::tsc::now().wrapping_sub(start);
    info!("netbench_frames", "{}", done);
    info!("netbench_frame_bytes", "{}", len);
    info!("netbench_cycles", "{}", cycles);
    println!("PROBE ok netbench");
    Ok(())
}

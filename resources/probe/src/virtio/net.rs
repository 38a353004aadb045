//! The `net` check on virtio-net: the MAC from the configuration space, a broadcast frame of
//! ethertype 0x88b5 carrying `veil-probe-ping`, and a bounded wait for a frame of the same
//! ethertype whose payload starts with `veil-probe-pong`.
//!
//! Negotiates VERSION_1 and MAC only: no offloads, no mergeable receive buffers, so every
//! receive buffer holds a whole frame after the 12-byte header.

use super::virtqueue::{Buf, Virtqueue};
use super::{Device, NO_VECTOR, bytes, dma, find_for, kind};
use crate::checks::Why;
use crate::cmdline::Config;
use crate::tsc::Deadline;
use crate::{info, println};

const F_MAC: u64 = 1 << 5;
/// The virtio-net header with VERSION_1 (num_buffers included).
const HDR: usize = 12;
/// The probe's ethertype (IEEE 802 local experimental).
pub const ETHERTYPE: u16 = 0x88b5;
/// The payload the probe sends.
pub const PING: &[u8] = b"veil-probe-ping";
/// The payload prefix it waits for.
pub const PONG: &[u8] = b"veil-probe-pong";
/// Receive buffers posted, each one page.
const RX_BUFS: usize = 16;
const RX_LEN: u32 = 4096;
/// How long to wait for the reply.
const WAIT_MS: u64 = 5000;

/// Runs the `net` check.
pub fn check(cfg: &Config) -> Result<(), Why> {
    let t = find_for("net", kind::NET, cfg)?;
    let dev = Device::init(t, F_MAC)?;
    let r = run(&dev);
    dev.reset();
    r
}

fn run(dev: &Device) -> Result<(), Why> {
    if dev.features & F_MAC == 0 {
        return Err(Why::Text(
            "the device offers no MAC address (VIRTIO_NET_F_MAC)",
        ));
    }
    let mut mac = [0u8; 6];
    dev.config(0, &mut mac);
    info!("net_mac", "{}", Mac(&mac));
    let mut rx = dev.queue(0, NO_VECTOR)?;
    let mut tx = dev.queue(1, NO_VECTOR)?;
    rx.set_interrupts(false);
    tx.set_interrupts(false);
    dev.ready()?;

    let rx_mem = dma(RX_BUFS as u64 * u64::from(RX_LEN))?;
    let mut heads = [0u64; super::virtqueue::MAX_SIZE as usize];
    for i in 0..RX_BUFS.min(rx.size() as usize) {
        let addr = rx_mem + i as u64 * u64::from(RX_LEN);
        post(&mut rx, &mut heads, addr)?;
    }
    dev.t.notify(&rx);

    let txm = dma(4096)?;
    // SAFETY: fresh DMA memory: the (zero) header at `txm`, the frame at `txm + 64`.
    let frame = unsafe { bytes(txm + 64, 60) };
    frame[0..6].fill(0xff);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    frame[14..14 + PING.len()].copy_from_slice(PING);
    dev.transact(
        &mut tx,
        &[Buf::read(txm, HDR as u32), Buf::read(txm + 64, 60)],
    )?;

    let dl = Deadline::after_ms(WAIT_MS);
    let mut seen = 0u64;
    loop {
        if let Some((id, len)) = rx.poll()? {
            let addr = heads.get(usize::from(id)).copied().unwrap_or(0);
            if addr == 0 || len > RX_LEN {
                return Err(Why::At(
                    "the device returned a bad receive buffer",
                    id.into(),
                ));
            }
            seen += 1;
            // SAFETY: the device returned this buffer, so it no longer writes it.
            let b = unsafe { bytes(addr, len as usize) };
            if is_pong(b) {
                info!("net_rx_frames", "{}", seen);
                println!("PROBE ok net");
                return Ok(());
            }
            post(&mut rx, &mut heads, addr)?;
            dev.t.notify(&rx);
            continue;
        }
        if dl.expired() {
            info!("net_rx_frames", "{}", seen);
            return Err(Why::Text(
                "no frame with ethertype 0x88b5 and payload veil-probe-pong within 5 s",
            ));
        }
        core::hint::spin_loop();
    }
}

fn post(rx: &mut Virtqueue, heads: &mut [u64], addr: u64) -> Result<(), Why> {
    let head = rx.add(&[Buf::write(addr, RX_LEN)])?;
    heads[usize::from(head)] = addr;
    Ok(())
}

/// A received buffer (header + frame) carrying the pong.
fn is_pong(b: &[u8]) -> bool {
    let Some(f) = b.get(HDR..) else {
        return false;
    };
    f.len() >= 14 + PONG.len() && f[12..14] == ETHERTYPE.to_be_bytes() && f[14..].starts_with(PONG)
}

/// A MAC address as `aa:bb:cc:dd:ee:ff`.
struct Mac<'a>(&'a [u8; 6]);

impl core::fmt::Display for Mac<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

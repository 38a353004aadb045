//! The `blk` check on virtio-blk: capacity, GET_ID, sector 0; optionally a write, FLUSH and
//! read-back of sector 1 (`probe.blk_write=`), or a write a read-only disk must refuse
//! (`probe.blk_ro=1`).

use super::virtqueue::{Buf, Virtqueue};
use super::{Device, Hex, NO_VECTOR, TIMED_REQUESTS, bytes, dma, find_for, kind};
use crate::checks::Why;
use crate::cmdline::Config;
use crate::{info, println};

/// Feature bits (virtio 1.2, 5.2.3).
const F_RO: u64 = 1 << 5;
const F_FLUSH: u64 = 1 << 9;
/// Request types.
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
/// Request status values.
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const SECTOR: usize = 512;
const ID_BYTES: usize = 20;

/// One request at a time: the header at `mem`, the status byte at `mem + 16`, data at
/// `mem + 4096`.
struct Blk {
    dev: Device,
    vq: Virtqueue,
    mem: u64,
}

impl Blk {
    /// Sends a request of type `kind` for `sector` with `data` bytes of data (written by the
    /// device when `device_writes`); returns its status.
    fn request(
        &mut self,
        kind: u32,
        sector: u64,
        data: u32,
        device_writes: bool,
    ) -> Result<u8, Why> {
        // SAFETY: the header and status live in this driver's DMA page; the device is idle.
        let hdr = unsafe { bytes(self.mem, 17) };
        hdr[0..4].copy_from_slice(&kind.to_le_bytes());
        hdr[4..8].fill(0);
        hdr[8..16].copy_from_slice(&sector.to_le_bytes());
        hdr[16] = 0xff;
        let head = Buf::read(self.mem, 16);
        let status = Buf::write(self.mem + 16, 1);
        let body = Buf {
            addr: self.mem + 4096,
            len: data,
            write: device_writes,
        };
        if data == 0 {
            self.dev.transact(&mut self.vq, &[head, status])?;
        } else {
            self.dev.transact(&mut self.vq, &[head, body, status])?;
        }
        // SAFETY: as above; the device completed the request.
        Ok(unsafe { bytes(self.mem + 16, 1) }[0])
    }

    fn data(&self, len: usize) -> &'static mut [u8] {
        // SAFETY: the data page of this driver's DMA memory; the device is idle between requests.
        unsafe { bytes(self.mem + 4096, len) }
    }
}

/// Runs the `blk` check.
pub fn check(cfg: &Config) -> Result<(), Why> {
    let t = find_for("blk", kind::BLK, cfg)?;
    let dev = Device::init(t, F_RO | F_FLUSH)?;
    let mut vq = dev.queue(0, NO_VECTOR)?;
    vq.set_interrupts(false);
    dev.ready()?;
    let mut blk = Blk {
        dev,
        vq,
        mem: dma(2 * 4096)?,
    };
    let r = run(&mut blk, cfg);
    blk.dev.reset();
    r
}

fn run(blk: &mut Blk, cfg: &Config) -> Result<(), Why> {
    let mut cap = [0u8; 8];
    blk.dev.config(0, &mut cap);
    let capacity = u64::from_le_bytes(cap);
    info!("blk_capacity", "{}", capacity);

    let s = blk.request(T_GET_ID, 0, ID_BYTES as u32, true)?;
    if s != S_OK {
        return Err(Why::At("GET_ID failed with status", s.into()));
    }
    let id = blk.data(ID_BYTES);
    let n = id.iter().position(|&b| b == 0).unwrap_or(ID_BYTES);
    let text = core::str::from_utf8(&id[..n]).unwrap_or("?");
    info!("blk_id", "{}", crate::checks::Printable(text));

    if capacity == 0 {
        return Err(Why::Text("the disk has no sectors"));
    }
    let s = blk.request(T_IN, 0, SECTOR as u32, true)?;
    if s != S_OK {
        return Err(Why::At("reading sector 0 failed with status", s.into()));
    }
    info!("blk_sector0", "{}", Hex(&blk.data(16)[..16]));
    let timed = [
        Buf::read(blk.mem, 16),
        Buf::write(blk.mem + 4096, SECTOR as u32),
        Buf::write(blk.mem + 16, 1),
    ];
    let cycles = blk.dev.time_requests(&mut blk.vq, &timed, TIMED_REQUESTS)?;
    // SAFETY: the status byte of this driver's DMA page; the device completed the request.
    let s = unsafe { bytes(blk.mem + 16, 1) }[0];
    if s != S_OK {
        return Err(Why::At(
            "a timed read of sector 0 failed with status",
            s.into(),
        ));
    }
    info!("blk_read_cycles", "{}", cycles);

    if cfg.blk_ro {
        check_ro(blk, cfg, capacity)?;
    } else if let Some(pattern) = cfg.blk_write {
        check_write(blk, &pattern, capacity)?;
    }
    println!("PROBE ok blk");
    Ok(())
}

fn fill_sector(blk: &Blk, pattern: &[u8; 16]) {
    for chunk in blk.data(SECTOR).chunks_mut(16) {
        chunk.copy_from_slice(pattern);
    }
}

fn check_write(blk: &mut Blk, pattern: &[u8; 16], capacity: u64) -> Result<(), Why> {
    if capacity < 2 {
        return Err(Why::Text("the disk has no sector 1 to write"));
    }
    if blk.dev.features & F_FLUSH == 0 {
        return Err(Why::Text("the device does not offer FLUSH"));
    }
    fill_sector(blk, pattern);
    let s = blk.request(T_OUT, 1, SECTOR as u32, false)?;
    if s != S_OK {
        return Err(Why::At("writing sector 1 failed with status", s.into()));
    }
    let s = blk.request(T_FLUSH, 0, 0, false)?;
    if s != S_OK {
        return Err(Why::At("FLUSH failed with status", s.into()));
    }
    blk.data(SECTOR).fill(0);
    let s = blk.request(T_IN, 1, SECTOR as u32, true)?;
    if s != S_OK {
        return Err(Why::At(
            "reading sector 1 back failed with status",
            s.into(),
        ));
    }
    if let Some(i) = blk
        .data(SECTOR)
        .iter()
        .enumerate()
        .position(|(i, &b)| b != pattern[i % 16])
    {
        return Err(Why::At("sector 1 read back differs at byte", i as u64));
    }
    Ok(())
}

/// A read-only disk: a write to sector 1 completes with IOERR and the sector is unchanged.
fn check_ro(blk: &mut Blk, cfg: &Config, capacity: u64) -> Result<(), Why> {
    if capacity < 2 {
        return Err(Why::Text("the disk has no sector 1 to write"));
    }
    let s = blk.request(T_IN, 1, SECTOR as u32, true)?;
    if s != S_OK {
        return Err(Why::At("reading sector 1 failed with status", s.into()));
    }
    let mut before = [0u8; SECTOR];
    before.copy_from_slice(blk.data(SECTOR));
    let pattern = cfg.blk_write.unwrap_or(*b"veil-probe-ro-wr");
    fill_sector(blk, &pattern);
    let s = blk.request(T_OUT, 1, SECTOR as u32, false)?;
    if s != S_IOERR {
        return Err(Why::At(
            "a write to the read-only disk completed with status (expected 1, IOERR)",
            s.into(),
        ));
    }
    blk.data(SECTOR).fill(0);
    let s = blk.request(T_IN, 1, SECTOR as u32, true)?;
    if s != S_OK {
        return Err(Why::At(
            "reading sector 1 back failed with status",
            s.into(),
        ));
    }
    if blk.data(SECTOR) != before {
        return Err(Why::Text("the refused write changed sector 1"));
    }
    println!("PROBE ok blk-ro");
    Ok(())
}

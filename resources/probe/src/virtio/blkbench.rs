//! The `blkbench` workload on virtio-blk: keeps `probe.blk_qd` requests of `probe.blk_bs` bytes
//! in flight on queue 0 (random reads or sequential writes), refilling each slot as its
//! completion is polled from the used ring, until `probe.blk_ops` requests completed. The
//! cycles are TSC cycles from the first notification to the last completion; the harness
//! converts them with the host's TSC rate. Like a real driver without EVENT_IDX, it skips the
//! notification while the device sets VRING_USED_F_NO_NOTIFY (a device polling its ring).

use super::virtqueue::{Buf, LIMIT, Virtqueue};
use super::{Device, NO_VECTOR, REQUEST_MS, bytes, dma, find_for, kind};
use crate::checks::Why;
use crate::cmdline::{BlkPattern, Config};
use crate::{info, println};

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const S_OK: u8 = 0;
const SECTOR: u64 = 512;
/// Descriptors per request: header, data, status.
const DESCS: u16 = 3;
/// Used ring flag: the device does not need notifications now.
const USED_F_NO_NOTIFY: u16 = 1;

/// Whether the device asks not to be notified (read after the avail index was published).
fn notify_suppressed(vq: &Virtqueue) -> bool {
    let (_, _, used) = vq.addrs();
    // SAFETY: the used ring's flags field, in this queue's own used page.
    let flags = unsafe { (used as *const u16).read_volatile() };
    flags & USED_F_NO_NOTIFY != 0
}

/// A xorshift64 generator: cheap, deterministic random block numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Per-slot memory: a 4 KiB page of headers (32 bytes per slot: 16 of header, then the
/// status byte) and `qd` data buffers of `bs` bytes.
struct Slots {
    hdrs: u64,
    data: u64,
    bs: u64,
}

impl Slots {
    fn hdr(&self, slot: u64) -> u64 {
        self.hdrs + slot * 32
    }
    fn status(&self, slot: u64) -> u64 {
        self.hdr(slot) + 16
    }
    fn chain(&self, slot: u64, write: bool) -> [Buf; 3] {
        [
            Buf::read(self.hdr(slot), 16),
            Buf {
                addr: self.data + slot * self.bs,
                len: self.bs as u32,
                write: !write,
            },
            Buf::write(self.status(slot), 1),
        ]
    }
}

/// Runs the `blkbench` workload.
pub fn run(cfg: &Config) -> Result<(), Why> {
    let t = find_for("blkbench", kind::BLK, cfg)?;
    let dev = Device::init(t, 0)?;
    let mut vq = dev.queue_up_to(0, NO_VECTOR, LIMIT)?;
    vq.set_interrupts(false);
    dev.ready()?;
    let r = bench(&dev, &mut vq, cfg);
    dev.reset();
    r
}

fn bench(dev: &Device, vq: &mut Virtqueue, cfg: &Config) -> Result<(), Why> {
    let qd = u64::from(cfg.blk_qd);
    if qd * u64::from(DESCS) > u64::from(vq.size()) {
        return Err(Why::At(
            "the queue is too small for probe.blk_qd; entries",
            vq.size().into(),
        ));
    }
    let bs = cfg.blk_bs;
    let mut cap = [0u8; 8];
    dev.config(0, &mut cap);
    let blocks = u64::from_le_bytes(cap) * SECTOR / bs;
    if blocks == 0 {
        return Err(Why::At("the disk is smaller than one block of bytes", bs));
    }
    let slots = Slots {
        hdrs: dma(4096)?,
        data: dma(qd * bs)?,
        bs,
    };
    let write = cfg.blk_pattern == BlkPattern::SeqWrite;
    let kind = if write { T_OUT } else { T_IN };
    for slot in 0..qd {
        // SAFETY: this slot's header in the driver's header page; no request is in flight.
        let hdr = unsafe { bytes(slots.hdr(slot), 16) };
        hdr[0..4].copy_from_slice(&kind.to_le_bytes());
        hdr[4..16].fill(0);
    }
    if write {
        // SAFETY: the data buffers; no request is in flight.
        let data = unsafe { bytes(slots.data, (qd * bs) as usize) };
        for (i, b) in data.iter_mut().enumerate() {
            *b = i as u8;
        }
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut next_block = 0u64;
    let mut pick = move || {
        if write {
            let b = next_block;
            next_block = (next_block + 1) % blocks;
            b
        } else {
            rng.next() % blocks
        }
    };
    // Which slot each head carries.
    let mut slot_of = [0u8; LIMIT as usize];
    let total = cfg.blk_ops;
    let mut submitted = 0u64;
    let mut done = 0u64;
    let start = crate::tsc::now();
    let mut submit = |slot: u64, vq: &mut Virtqueue, slot_of: &mut [u8]| -> Result<(), Why> {
        let sector = pick() * bs / SECTOR;
        // SAFETY: this slot's header; its previous request (if any) completed.
        let hdr = unsafe { bytes(slots.hdr(slot), 17) };
        hdr[8..16].copy_from_slice(&sector.to_le_bytes());
        hdr[16] = 0xff;
        let head = vq.add(&slots.chain(slot, write))?;
        slot_of[usize::from(head)] = slot as u8;
        Ok(())
    };
    for slot in 0..qd.min(total) {
        submit(slot, vq, &mut slot_of)?;
        submitted += 1;
    }
    dev.t.notify(vq);
    let mut dl = crate::tsc::Deadline::after_ms(REQUEST_MS);
    while done < total {
        let mut refilled = false;
        while let Some((head, _)) = vq.poll()? {
            let slot = u64::from(slot_of[usize::from(head)]);
            // SAFETY: the status byte of a completed request.
            let s = unsafe { bytes(slots.status(slot), 1) }[0];
            if s != S_OK {
                return Err(Why::At("a request completed with status", s.into()));
            }
            done += 1;
            if submitted < total {
                submit(slot, vq, &mut slot_of)?;
                submitted += 1;
                refilled = true;
            }
        }
        if refilled {
            if !notify_suppressed(vq) {
                dev.t.notify(vq);
            }
            dl = crate::tsc::Deadline::after_ms(REQUEST_MS);
        } else if dl.expired() {
            return Err(Why::At("no completion within 5 s; completed", done));
        }
        core::hint::spin_loop();
    }
    let cycles = crate::tsc::now().wrapping_sub(start);
    info!("blkbench_qd", "{}", qd);
    info!("blkbench_bs", "{}", bs);
    info!("blkbench_ops", "{}", done);
    info!("blkbench_cycles", "{}", cycles);
    println!("PROBE ok blkbench");
    Ok(())
}

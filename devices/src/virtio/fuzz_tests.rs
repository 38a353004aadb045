//! Garbage in every ring field and register: whatever a guest writes, the real device code must
//! neither panic nor hang. Deterministic pseudo-random inputs, so a failure reproduces.

use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::block::{Block, BlockConfig, Engine};
use super::device::{ActivateParams, DeviceHealth};
use super::testing::{CountingInterrupt, TestRing, guest_mem};
use super::{GuestMem, VirtioDevice, VirtioInterrupt};
use crate::bus::BusDevice;

/// xorshift64*: small, deterministic, good enough to scramble rings.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

const MEM: u64 = 0x10_0000;

/// Scrambles the descriptor table (mostly plausible values, sometimes wild ones) and publishes
/// a random number of random heads.
fn scramble(rng: &mut Rng, mem: &GuestMem, ring: &TestRing) {
    for i in 0..ring.size {
        let r = rng.next();
        let addr = match r % 4 {
            0 => rng.next(),
            1 => ring.desc + (rng.next() % 0x2000),
            _ => 0x8000 + rng.next() % (MEM - 0x8000),
        };
        let len = match (r >> 8) % 4 {
            0 => rng.next() as u32,
            1 => 0,
            _ => (rng.next() % 0x3000) as u32,
        };
        let flags = (rng.next() % 8) as u16;
        let next = if r % 16 == 0 {
            rng.next() as u16
        } else {
            (rng.next() % u64::from(ring.size)) as u16
        };
        ring.set_desc(i, addr, len, flags, next);
    }
    for i in 0..ring.size {
        let head = if rng.next() % 8 == 0 {
            rng.next() as u16
        } else {
            (rng.next() % u64::from(ring.size)) as u16
        };
        mem.write_obj(head, GuestAddress(ring.avail + 4 + 2 * u64::from(i)))
            .unwrap();
    }
    // Random payload bytes where buffers usually point.
    for _ in 0..64 {
        let at = 0x8000 + rng.next() % (MEM - 0x8010);
        mem.write_obj(rng.next(), GuestAddress(at)).unwrap();
    }
    let idx = if rng.next() % 8 == 0 {
        rng.next() as u16
    } else {
        (rng.next() % u64::from(ring.size)) as u16
    };
    ring.set_avail_idx(idx);
    ring.set_used_event(rng.next() as u16);
}

fn params(
    mem: &GuestMem,
    queues: Vec<super::ActiveQueue>,
    features: u64,
) -> (ActivateParams, Arc<DeviceHealth>) {
    let health = Arc::new(DeviceHealth::new());
    (
        ActivateParams {
            mem: mem.clone(),
            queues,
            interrupt: CountingInterrupt::new() as Arc<dyn VirtioInterrupt>,
            health: health.clone(),
            features,
        },
        health,
    )
}

#[test]
fn block_survives_random_rings() {
    let img = std::env::temp_dir().join(format!("veil-fuzz-blk-{}", std::process::id()));
    std::fs::write(&img, vec![0u8; 64 * 1024]).unwrap();
    let mut rng = Rng(0x5eed_0001);
    for engine in [Engine::Sync, Engine::IoUring] {
        let mut cfg = BlockConfig::new(&img);
        cfg.engine = engine;
        let dev = Block::new(&cfg).unwrap();
        for round in 0..150 {
            let mem = guest_mem(MEM as usize);
            let ring = TestRing::new(&mem, 0, 16);
            scramble(&mut rng, &mem, &ring);
            let (active, _) = ring.active(0);
            let features = dev.features() & if round % 2 == 0 { u64::MAX } else { !(1 << 28) };
            let (p, _health) = params(&mem, Vec::new(), features);
            let mut w = dev.worker_for(&p, active);
            w.process_queue();
            // Let io_uring finish, then reap; dropping the worker waits for the rest.
            std::thread::sleep(std::time::Duration::from_micros(200));
            w.process_completions();
        }
    }
    let _ = std::fs::remove_file(&img);
}

#[test]
fn rng_console_and_vsock_survive_random_rings() {
    let mut rng = Rng(0x5eed_0002);
    for _ in 0..150 {
        let mem = guest_mem(MEM as usize);
        let ring = TestRing::new(&mem, 0, 16);
        scramble(&mut rng, &mem, &ring);
        let (p, _) = params(&mem, vec![ring.active(0).0], rng.next());
        let mut w = super::rng::RngWorker::new(p, Arc::default()).unwrap();
        w.process_queue();

        let rx = TestRing::new(&mem, 0x4000, 16);
        scramble(&mut rng, &mem, &rx);
        let out: super::console::ConsoleSink = Arc::new(std::sync::Mutex::new(std::io::sink()));
        let (p, _) = params(&mem, vec![rx.active(0).0, ring.active(1).0], rng.next());
        let mut c = super::console::ConsoleWorker::new(p, out, None, Arc::default()).unwrap();
        c.process_tx();
        c.process_input();
    }
    let path = std::env::temp_dir().join(format!("veil-fuzz-vsock-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let dev = super::vsock::Vsock::new(3, &path).unwrap();
    for _ in 0..150 {
        let mem = guest_mem(MEM as usize);
        let rx = TestRing::new(&mem, 0, 16);
        let tx = TestRing::new(&mem, 0x4000, 16);
        let ev = TestRing::new(&mem, 0x8000, 16);
        scramble(&mut rng, &mem, &rx);
        scramble(&mut rng, &mem, &tx);
        // Make a fair share of transmit buffers look like vsock packets from the guest.
        for i in 0..16u64 {
            let at = GuestAddress(0x8000 + i * 0x1000);
            mem.write_obj(3u64, at).unwrap();
            mem.write_obj(2u64, GuestAddress(at.0 + 8)).unwrap();
        }
        let (p, _) = params(
            &mem,
            vec![rx.active(0).0, tx.active(1).0, ev.active(2).0],
            0,
        );
        let mut w = dev.worker_for(p).unwrap();
        w.process_tx();
        w.process_rx();
    }
}

#[test]
fn transports_survive_random_register_traffic() {
    let mut rng = Rng(0x5eed_0003);
    let mem = guest_mem(MEM as usize);
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let mut mmio = super::mmio::MmioTransport::new(
        Box::new(super::rng::Rng::new()),
        mem.clone(),
        irq.try_clone().unwrap(),
        false,
    )
    .unwrap();
    #[derive(Debug)]
    struct NoRoutes;
    impl crate::pci::MsiRouting for NoRoutes {
        fn route(&self, _: u16, _: crate::pci::MsiMessage) -> std::io::Result<()> {
            Ok(())
        }
    }
    let fds = (0..3)
        .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
        .collect();
    let mut pci = crate::pci::VirtioPciDevice::new(
        Box::new(super::rng::Rng::new()),
        mem.clone(),
        true,
        0xc000_0000,
        fds,
        Arc::new(NoRoutes),
    )
    .unwrap();
    // Occasionally a plausible ring, so DRIVER_OK sometimes starts the device for real.
    let ring = TestRing::new(&mem, 0, 16);
    for _ in 0..20_000 {
        let r = rng.next();
        let len = [1usize, 2, 4, 8, 3][(r % 5) as usize];
        let v = match (r >> 4) % 4 {
            0 => rng.next(),
            1 => ring.desc,
            2 => u64::from((rng.next() % 16) as u8),
            _ => 0xf,
        };
        let bytes = v.to_le_bytes();
        let off = rng.next() % 0x140;
        if r % 3 == 0 {
            let mut b = [0u8; 8];
            mmio.read(0, off, &mut b[..len]);
            crate::pci::PciDevice::config_read(
                &mut pci,
                (rng.next() % 0x1000) as u16,
                &mut b[..len],
            );
            pci.read(0, rng.next() % 0x9000, &mut b[..len]);
        } else {
            mmio.write(0, off & !3, &bytes[..4]);
            crate::pci::PciDevice::config_write(
                &mut pci,
                (rng.next() % 0x100) as u16,
                &bytes[..len],
            );
            pci.write(0, rng.next() % 0x9000, &bytes[..len]);
        }
    }
}

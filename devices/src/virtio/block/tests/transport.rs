//! Block queues served end to end behind the virtio-mmio transport.

use vm_memory::{Bytes, GuestAddress};

use super::super::request::{req_type, status};
#[allow(unused_imports)]
use super::{Block, BlockConfig, ENGINE, Engine, Image, pattern};
use crate::virtio::testing::{TestRing, guest_mem};

/// Two queues served by their own threads behind the virtio-mmio transport, notified through
/// the transport (the ioeventfd path) and answered through the interrupt line.
fn multi_queue_through_the_transport_body() {
    use crate::bus::BusDevice;
    use crate::virtio::mmio::MmioTransport;
    use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

    let engine = ENGINE.with(|e| e.get());
    let img = Image::new(&format!("mq-{engine:?}"), &pattern(64 * 1024));
    let mut cfg = BlockConfig::new(&img.0);
    cfg.num_queues = 2;
    cfg.engine = engine;
    let mem = guest_mem(0x10_0000);
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let mut t = MmioTransport::new(
        Box::new(Block::new(&cfg).unwrap()),
        mem.clone(),
        irq.try_clone().unwrap(),
        false,
    )
    .unwrap();
    let w = |t: &mut MmioTransport, off: u64, v: u32| t.write(0, off, &v.to_le_bytes());
    w(&mut t, 0x70, 1);
    w(&mut t, 0x70, 3);
    w(&mut t, 0x24, 1);
    w(&mut t, 0x20, 1);
    w(&mut t, 0x70, 11);
    let mut rings = [TestRing::new(&mem, 0, 16), TestRing::new(&mem, 0x4000, 16)];
    for (q, ring) in rings.iter().enumerate() {
        w(&mut t, 0x30, q as u32);
        w(&mut t, 0x38, 16);
        w(&mut t, 0x80, ring.desc as u32);
        w(&mut t, 0x90, ring.avail as u32);
        w(&mut t, 0xa0, ring.used as u32);
        w(&mut t, 0x44, 1);
    }
    w(&mut t, 0x70, 15);
    assert!(t.common().is_active());
    for (q, ring) in rings.iter_mut().enumerate() {
        let base = 0x40000 + q as u64 * 0x10000;
        mem.write_obj(req_type::IN, GuestAddress(base)).unwrap();
        mem.write_obj(q as u64 * 8, GuestAddress(base + 8)).unwrap();
        ring.add_chain(
            0,
            &[
                (base, 16, false),
                (base + 0x1000, 4096, true),
                (base + 0x3000, 1, true),
            ],
        );
        w(&mut t, 0x50, q as u32);
    }
    let start = std::time::Instant::now();
    while rings.iter().any(|r| r.used_idx() != 1) {
        assert!(start.elapsed().as_secs() < 10, "queues not served");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    for q in 0..2u64 {
        let base = 0x40000 + q * 0x10000;
        let st: u8 = mem.read_obj(GuestAddress(base + 0x3000)).unwrap();
        assert_eq!(st, status::OK);
        let mut got = vec![0u8; 4096];
        mem.read_slice(&mut got, GuestAddress(base + 0x1000))
            .unwrap();
        let s = q as usize * 4096;
        assert_eq!(got, pattern(64 * 1024)[s..s + 4096]);
    }
    assert!(irq.read().is_ok(), "no interrupt");
    // Reset while idle stops both threads.
    w(&mut t, 0x70, 0);
    assert!(!t.common().is_active());
}
both_engines!(
    multi_queue_through_the_transport,
    multi_queue_through_the_transport_body
);

/// A driver reset while requests are in flight: the device stops, waits for the backend, and
/// never touches the ring afterwards.
fn reset_with_requests_in_flight_body() {
    use crate::bus::BusDevice;
    use crate::virtio::mmio::MmioTransport;
    use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

    let engine = ENGINE.with(|e| e.get());
    let img = Image::new(&format!("reset-{engine:?}"), &pattern(1 << 20));
    let mut cfg = BlockConfig::new(&img.0);
    cfg.engine = engine;
    let mem = guest_mem(0x40_0000);
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let mut t =
        MmioTransport::new(Box::new(Block::new(&cfg).unwrap()), mem.clone(), irq, false).unwrap();
    let w = |t: &mut MmioTransport, off: u64, v: u32| t.write(0, off, &v.to_le_bytes());
    let mut ring = TestRing::new(&mem, 0, 64);
    for round in 0..20u32 {
        w(&mut t, 0x70, 0);
        ring = TestRing::new(&mem, 0, 64);
        w(&mut t, 0x70, 3);
        w(&mut t, 0x24, 1);
        w(&mut t, 0x20, 1);
        w(&mut t, 0x70, 11);
        w(&mut t, 0x30, 0);
        w(&mut t, 0x38, 64);
        w(&mut t, 0x80, ring.desc as u32);
        w(&mut t, 0x90, ring.avail as u32);
        w(&mut t, 0xa0, ring.used as u32);
        w(&mut t, 0x44, 1);
        w(&mut t, 0x70, 15);
        assert!(t.common().is_active(), "round {round}");
        // 21 reads of 64 KiB each.
        for i in 0..21u16 {
            let hdr = 0x10_0000 + u64::from(i) * 0x100;
            mem.write_obj(req_type::IN, GuestAddress(hdr)).unwrap();
            mem.write_obj(u64::from(i) * 128, GuestAddress(hdr + 8))
                .unwrap();
            let data = 0x20_0000 + u64::from(i) * 0x1_0000;
            ring.add_chain(
                i * 3,
                &[
                    (hdr, 16, false),
                    (data, 0x1_0000, true),
                    (hdr + 0x80, 1, true),
                ],
            );
        }
        w(&mut t, 0x50, 0);
        if round % 2 == 1 {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        w(&mut t, 0x70, 0);
        assert!(!t.common().is_active());
        let after = ring.used_idx();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_eq!(
            ring.used_idx(),
            after,
            "round {round}: ring touched after reset"
        );
    }
    let _ = ring;
}
both_engines!(
    reset_with_requests_in_flight,
    reset_with_requests_in_flight_body
);

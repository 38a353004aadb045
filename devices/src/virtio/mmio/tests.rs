//! The virtio-mmio transport driven the way a guest driver drives it.

use std::time::Duration;

use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::*;
use crate::virtio::features::{EVENT_IDX, VERSION_1, bit};
use crate::virtio::rng::Rng;
use crate::virtio::status::*;
use crate::virtio::testing::{TestRing, guest_mem, wait_for};

fn rd(t: &mut MmioTransport, off: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(0, off, &mut b);
    u32::from_le_bytes(b)
}

fn wr(t: &mut MmioTransport, off: u64, v: u32) {
    t.write(0, off, &v.to_le_bytes());
}

fn rng_transport(confidential: bool) -> (MmioTransport, EventFd, GuestMem) {
    let mem = guest_mem(0x10_0000);
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let t = MmioTransport::new(
        Box::new(Rng::new()),
        mem.clone(),
        irq.try_clone().unwrap(),
        confidential,
    )
    .unwrap();
    (t, irq, mem)
}

fn negotiate(t: &mut MmioTransport, features: u64) {
    wr(t, reg::STATUS, 0);
    wr(t, reg::STATUS, u32::from(ACKNOWLEDGE));
    wr(t, reg::STATUS, u32::from(ACKNOWLEDGE | DRIVER));
    wr(t, reg::DRIVER_FEATURES_SEL, 0);
    wr(t, reg::DRIVER_FEATURES, features as u32);
    wr(t, reg::DRIVER_FEATURES_SEL, 1);
    wr(t, reg::DRIVER_FEATURES, (features >> 32) as u32);
    wr(
        t,
        reg::STATUS,
        u32::from(ACKNOWLEDGE | DRIVER | FEATURES_OK),
    );
}

fn setup_queue(t: &mut MmioTransport, ring: &TestRing) {
    wr(t, reg::QUEUE_SEL, 0);
    wr(t, reg::QUEUE_NUM, u32::from(ring.size));
    wr(t, reg::QUEUE_DESC_LOW, ring.desc as u32);
    wr(t, reg::QUEUE_DESC_HIGH, 0);
    wr(t, reg::QUEUE_DRIVER_LOW, ring.avail as u32);
    wr(t, reg::QUEUE_DRIVER_HIGH, 0);
    wr(t, reg::QUEUE_DEVICE_LOW, ring.used as u32);
    wr(t, reg::QUEUE_DEVICE_HIGH, 0);
    wr(t, reg::QUEUE_READY, 1);
}

const DRIVER_ALL: u32 = (ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK) as u32;

#[test]
fn identifies_itself() {
    let (mut t, _, _) = rng_transport(false);
    assert_eq!(rd(&mut t, reg::MAGIC), 0x7472_6976);
    assert_eq!(rd(&mut t, reg::VERSION), 2);
    assert_eq!(rd(&mut t, reg::DEVICE_ID), crate::virtio::device_type::RNG);
    assert_eq!(rd(&mut t, reg::VENDOR_ID), VENDOR_ID);
    wr(&mut t, reg::DEVICE_FEATURES_SEL, 1);
    assert_eq!(rd(&mut t, reg::DEVICE_FEATURES), 1, "VERSION_1 only");
    let (mut c, _, _) = rng_transport(true);
    wr(&mut c, reg::DEVICE_FEATURES_SEL, 1);
    assert_eq!(
        rd(&mut c, reg::DEVICE_FEATURES),
        3,
        "VERSION_1 | ACCESS_PLATFORM"
    );
    wr(&mut t, reg::QUEUE_SEL, 0);
    assert_eq!(rd(&mut t, reg::QUEUE_NUM_MAX), 256);
    wr(&mut t, reg::QUEUE_SEL, 5);
    assert_eq!(rd(&mut t, reg::QUEUE_NUM_MAX), 0);
    // Odd-sized register accesses are refused, not misread.
    let mut b = [0xaau8; 2];
    t.read(0, reg::MAGIC, &mut b);
    assert_eq!(b, [0, 0]);
    assert_eq!(
        MmioTransport::cmdline_arg(0xd000_0000, 5),
        "virtio_mmio.device=4K@0xd0000000:5"
    );
}

#[test]
fn serves_requests_through_the_worker_thread() {
    let (mut t, irq, mem) = rng_transport(false);
    let mut ring = TestRing::new(&mem, 0, 16);
    negotiate(&mut t, bit(VERSION_1) | bit(EVENT_IDX));
    assert_eq!(
        rd(&mut t, reg::STATUS) & u32::from(FEATURES_OK),
        u32::from(FEATURES_OK)
    );
    setup_queue(&mut t, &ring);
    wr(&mut t, reg::STATUS, DRIVER_ALL);
    assert!(t.common().is_active());
    ring.add_chain(0, &[(0x8000, 32, true)]);
    wr(&mut t, reg::QUEUE_NOTIFY, 0);
    wait_for("used entry", || ring.used_idx() == 1);
    assert_eq!(ring.used_elem(0), (0, 32));
    wait_for("interrupt", || irq.read().is_ok());
    assert_eq!(rd(&mut t, reg::INTERRUPT_STATUS), INT_VRING);
    wr(&mut t, reg::INTERRUPT_ACK, INT_VRING);
    assert_eq!(rd(&mut t, reg::INTERRUPT_STATUS), 0);
    // The queue registers are frozen while the device runs.
    wr(&mut t, reg::QUEUE_NUM, 4);
    assert!(t.common().queue_at(0).unwrap().size == 16);
    // Reset in the middle of I/O: requests in flight are abandoned, the worker stops.
    ring.add_chain(1, &[(0x8000, 32, true)]);
    wr(&mut t, reg::STATUS, 0);
    assert_eq!(rd(&mut t, reg::STATUS), 0);
    assert!(!t.common().is_active());
    wr(&mut t, reg::QUEUE_NOTIFY, 0);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(ring.used_idx(), 1, "a reset device must not touch the ring");
    // And it comes back after a fresh initialisation.
    let mut ring = TestRing::new(&mem, 0x4000, 8);
    negotiate(&mut t, bit(VERSION_1));
    setup_queue(&mut t, &ring);
    wr(&mut t, reg::STATUS, DRIVER_ALL);
    ring.add_chain(0, &[(0x8000, 16, true)]);
    wr(&mut t, reg::QUEUE_NOTIFY, 0);
    wait_for("used entry after reset", || ring.used_idx() == 1);
}

#[test]
fn features_never_offered_are_refused() {
    let (mut t, _, _) = rng_transport(false);
    // Bit 40 was never offered.
    negotiate(&mut t, bit(VERSION_1) | (1 << 40));
    assert_eq!(rd(&mut t, reg::STATUS) & u32::from(FEATURES_OK), 0);
    // A legacy driver (no VERSION_1) is refused too.
    negotiate(&mut t, 0);
    assert_eq!(rd(&mut t, reg::STATUS) & u32::from(FEATURES_OK), 0);
    // DRIVER_OK without FEATURES_OK does not start the device.
    wr(
        &mut t,
        reg::STATUS,
        u32::from(ACKNOWLEDGE | DRIVER | DRIVER_OK),
    );
    assert!(!t.common().is_active());
    // Writing features after FEATURES_OK is ignored.
    negotiate(&mut t, bit(VERSION_1));
    wr(&mut t, reg::DRIVER_FEATURES_SEL, 0);
    wr(&mut t, reg::DRIVER_FEATURES, u32::MAX);
    assert_eq!(t.common().driver_features(), bit(VERSION_1));
}

#[test]
fn bad_queue_configuration_sets_needs_reset() {
    type Breaker = fn(&mut MmioTransport);
    let cases: [(&str, Breaker); 6] = [
        ("avail ring at address 0", |t| {
            wr(t, reg::QUEUE_DRIVER_LOW, 0)
        }),
        ("size not a power of two", |t| wr(t, reg::QUEUE_NUM, 12)),
        ("size above the maximum", |t| wr(t, reg::QUEUE_NUM, 512)),
        ("size zero", |t| wr(t, reg::QUEUE_NUM, 0)),
        ("unaligned descriptor table", |t| {
            wr(t, reg::QUEUE_DESC_LOW, 0x1008)
        }),
        ("used ring outside memory", |t| {
            wr(t, reg::QUEUE_DEVICE_LOW, 0xffff_f000)
        }),
    ];
    for (what, breakit) in cases {
        let (mut t, irq, mem) = rng_transport(false);
        let ring = TestRing::new(&mem, 0, 16);
        negotiate(&mut t, bit(VERSION_1));
        wr(&mut t, reg::QUEUE_SEL, 0);
        wr(&mut t, reg::QUEUE_NUM, 16);
        wr(&mut t, reg::QUEUE_DESC_LOW, ring.desc as u32);
        wr(&mut t, reg::QUEUE_DRIVER_LOW, ring.avail as u32);
        wr(&mut t, reg::QUEUE_DEVICE_LOW, ring.used as u32);
        breakit(&mut t);
        wr(&mut t, reg::QUEUE_READY, 1);
        wr(&mut t, reg::STATUS, DRIVER_ALL);
        assert!(!t.common().is_active(), "{what}: device started");
        let status = rd(&mut t, reg::STATUS);
        assert_ne!(
            status & u32::from(DEVICE_NEEDS_RESET),
            0,
            "{what}: status {status:#x}"
        );
        assert_eq!(rd(&mut t, reg::INTERRUPT_STATUS), INT_CONFIG, "{what}");
        assert!(irq.read().is_ok(), "{what}: no config interrupt");
        // A reset clears it.
        wr(&mut t, reg::STATUS, 0);
        assert_eq!(rd(&mut t, reg::STATUS), 0, "{what}");
    }
}

#[test]
fn status_cannot_go_backwards_or_skip_steps() {
    let (mut t, _, _) = rng_transport(false);
    wr(&mut t, reg::STATUS, u32::from(DRIVER));
    assert_eq!(rd(&mut t, reg::STATUS), 0, "DRIVER before ACKNOWLEDGE");
    negotiate(&mut t, bit(VERSION_1));
    wr(&mut t, reg::STATUS, u32::from(ACKNOWLEDGE));
    assert_eq!(
        rd(&mut t, reg::STATUS),
        u32::from(ACKNOWLEDGE | DRIVER | FEATURES_OK),
        "bits cleared without reset"
    );
    // Queue selection past the end is harmless.
    wr(&mut t, reg::QUEUE_SEL, 0xffff_ffff);
    wr(&mut t, reg::QUEUE_NUM, 8);
    wr(&mut t, reg::QUEUE_READY, 1);
    wr(&mut t, reg::QUEUE_NOTIFY, 77);
    assert_eq!(rd(&mut t, reg::QUEUE_READY), 0);
}

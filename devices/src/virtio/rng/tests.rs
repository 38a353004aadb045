//! The entropy device fed crafted rings, hostile ones included, through its real worker.

use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress};

use super::{RngMetrics, RngWorker};
use crate::virtio::GuestMem;
use crate::virtio::device::DeviceHealth;
use crate::virtio::features::{EVENT_IDX, INDIRECT_DESC, bit};
use crate::virtio::testing::{CountingInterrupt, TestRing, guest_mem};

struct Rig {
    mem: GuestMem,
    ring: TestRing,
    irq: Arc<CountingInterrupt>,
    health: Arc<DeviceHealth>,
    worker: RngWorker,
}

fn rig(features: u64) -> Rig {
    let mem = guest_mem(0x10_0000);
    let ring = TestRing::new(&mem, 0, 16);
    let (active, _) = ring.active(0);
    let irq = CountingInterrupt::new();
    let params = irq.activate_params(&mem, vec![active], features);
    let health = params.health.clone();
    let worker = RngWorker::new(params, Arc::new(RngMetrics::default())).unwrap();
    Rig {
        mem,
        ring,
        irq,
        health,
        worker,
    }
}

#[test]
fn fills_buffers_and_signals_once_per_batch() {
    let mut r = rig(0);
    r.ring
        .add_chain(0, &[(0x8000, 64, true), (0x9000, 100, true)]);
    r.ring.add_chain(2, &[(0xa000, 32, true)]);
    r.ring.add_chain(3, &[(0xb000, 32, true)]);
    assert_eq!(r.worker.process_queue(), 3);
    assert_eq!(r.ring.used_idx(), 3);
    assert_eq!(r.ring.used_elem(0), (0, 164));
    assert_eq!(r.ring.used_elem(1), (2, 32));
    assert_eq!(r.irq.queue_signals(), 1);
    let mut buf = [0u8; 64];
    r.mem.read_slice(&mut buf, GuestAddress(0x8000)).unwrap();
    assert!(buf.iter().any(|&b| b != 0), "buffer was not filled");
    let mut tail = [0u8; 100];
    r.mem.read_slice(&mut tail, GuestAddress(0x9000)).unwrap();
    assert!(tail.iter().any(|&b| b != 0), "second buffer was not filled");
    // Nothing new: no interrupt.
    assert_eq!(r.worker.process_queue(), 0);
    assert_eq!(r.irq.queue_signals(), 1);
}

#[test]
fn event_idx_suppresses_interrupts_until_used_event() {
    let mut r = rig(bit(EVENT_IDX));
    // The driver wants an interrupt only once used index passes 2.
    r.ring.set_used_event(2);
    r.ring.add_chain(0, &[(0x8000, 8, true)]);
    assert_eq!(r.worker.process_queue(), 1);
    assert_eq!(r.irq.queue_signals(), 0);
    r.ring.add_chain(1, &[(0x8000, 8, true)]);
    r.ring.add_chain(2, &[(0x8000, 8, true)]);
    assert_eq!(r.worker.process_queue(), 2);
    assert_eq!(r.irq.queue_signals(), 1);
    // The device asks to be notified at the next avail index.
    assert_eq!(r.ring.avail_event(), 3);
}

#[test]
fn no_interrupt_flag_is_honoured_without_event_idx() {
    let mut r = rig(0);
    r.ring.set_avail_flags(1);
    r.ring.add_chain(0, &[(0x8000, 8, true)]);
    assert_eq!(r.worker.process_queue(), 1);
    assert_eq!(r.irq.queue_signals(), 0);
}

#[test]
fn bad_chains_complete_with_zero_and_the_queue_goes_on() {
    let mut r = rig(0);
    // A readable buffer where the device needs a writable one: nothing to fill, 0 bytes.
    r.ring.add_chain(0, &[(0x8000, 8, false)]);
    // A loop.
    r.ring.set_desc(1, 0x8000, 8, 1 | 2, 2);
    r.ring.set_desc(2, 0x8000, 8, 1 | 2, 1);
    r.ring.publish(1);
    // Outside guest memory.
    r.ring.add_chain(3, &[(0x10_0000 - 4, 8, true)]);
    // Over the used ring.
    r.ring.add_chain(4, &[(r.ring.used, 8, true)]);
    // Indirect without negotiation.
    r.ring.set_desc(5, 0x20000, 32, 4, 0);
    r.ring.publish(5);
    // Zero length.
    r.ring.add_chain(6, &[(0x8000, 0, true)]);
    // Finally a good one.
    r.ring.add_chain(7, &[(0x8000, 8, true)]);
    let used_before: [u8; 8] = r.mem.read_obj(GuestAddress(r.ring.used)).unwrap();
    assert_eq!(r.worker.process_queue(), 7);
    assert!(!r.health.needs_reset());
    for i in 0..6 {
        assert_eq!(r.ring.used_elem(i).1, 0, "chain {i} should complete empty");
    }
    assert_eq!(r.ring.used_elem(6), (7, 8));
    let used_after: [u8; 8] = r.mem.read_obj(GuestAddress(r.ring.used)).unwrap();
    // The used ring header changed only through the device's own index update.
    assert_eq!(used_before[..2], used_after[..2]);
}

#[test]
fn avail_index_jump_needs_reset() {
    let mut r = rig(0);
    r.ring.add_chain(0, &[(0x8000, 8, true)]);
    // The driver claims 100 new buffers in a ring of 16.
    r.ring.set_avail_idx(100);
    assert_eq!(r.worker.process_queue(), 0);
    assert!(r.health.needs_reset());
    assert!(r.worker.queue().is_broken());
    assert_eq!(r.irq.config_signals(), 1);
    // A broken queue stays quiet instead of looping on the bad ring, and is not written.
    let mut before = [0u8; 6 + 8 * 16 + 2];
    r.mem
        .read_slice(&mut before, GuestAddress(r.ring.used))
        .unwrap();
    r.ring.set_avail_idx(1);
    assert_eq!(r.worker.process_queue(), 0);
    assert_eq!(r.irq.config_signals(), 1);
    let mut after = [0u8; 6 + 8 * 16 + 2];
    r.mem
        .read_slice(&mut after, GuestAddress(r.ring.used))
        .unwrap();
    assert_eq!(before, after);
}

#[test]
fn head_outside_the_table_needs_reset() {
    let mut r = rig(0);
    r.ring.add_chain(0, &[(0x8000, 8, true)]);
    r.ring.publish(40);
    assert_eq!(r.worker.process_queue(), 1);
    assert!(r.health.needs_reset());
    // The completed chain was still signalled.
    assert_eq!(r.irq.queue_signals(), 1);
}

#[test]
fn indirect_chains_when_negotiated() {
    let mut r = rig(bit(INDIRECT_DESC));
    let table = 0x20000u64;
    r.mem.write_obj(0x8000u64, GuestAddress(table)).unwrap();
    r.mem.write_obj(48u32, GuestAddress(table + 8)).unwrap();
    r.mem.write_obj(2u16, GuestAddress(table + 12)).unwrap();
    r.ring.set_desc(0, table, 16, 4, 0);
    r.ring.publish(0);
    assert_eq!(r.worker.process_queue(), 1);
    assert_eq!(r.ring.used_elem(0), (0, 48));
}

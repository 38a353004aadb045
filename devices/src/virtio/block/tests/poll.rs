//! Polling: a request that arrives while the worker polls is served without the driver having
//! to notify, with and without EVENT_IDX, and notifications are back on afterwards.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use vm_memory::{Bytes, GuestAddress};

use super::super::request::{req_type, status};
use super::{BlockMetrics, DATA, ENGINE, Engine, HDR, POLLED, REFUSED, STATUS, pattern, rig};
use crate::virtio::features::{EVENT_IDX, bit};
use crate::virtio::testing::wait_for;

/// Whether a driver that just moved the avail index from `old` to `new` must notify, given the
/// ring state the device published (virtio 1.2, 2.7.10 and 2.7.7.2).
fn must_notify(event_idx: bool, used_flags: u16, avail_event: u16, old: u16, new: u16) -> bool {
    if event_idx {
        new.wrapping_sub(avail_event).wrapping_sub(1) < new.wrapping_sub(old)
    } else {
        used_flags & 1 == 0
    }
}

struct Stop<'a>(&'a AtomicBool);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn served_while_polling(event_idx: bool) {
    POLLED.with(|p| p.set(true));
    REFUSED.with(|r| r.set(if event_idx { 0 } else { bit(EVENT_IDX) }));
    let mut r = rig(if event_idx { "poll-ei" } else { "poll" });
    // A window no scheduling hiccup outlasts, so both requests land inside it.
    r.worker.poller.set_window(Duration::from_secs(2));
    let metrics = r.dev.metrics().clone();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let worker = &mut r.worker;
        let stop = &stop;
        // Stops the polling thread also when an assertion below fails (the scope joins it).
        let _stop = Stop(stop);
        let polling = s.spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                assert!(worker.poll(), "the worker polls");
            }
        });
        wait_for("the worker to poll", || {
            BlockMetrics::get(&metrics.polls) > 0
        });
        for i in 0..2u16 {
            let at = u64::from(i);
            r.mem
                .write_obj(req_type::IN, GuestAddress(HDR + at * 0x100))
                .unwrap();
            r.mem
                .write_obj(at * 8, GuestAddress(HDR + at * 0x100 + 8))
                .unwrap();
            r.ring.add_chain(
                i * 3,
                &[
                    (HDR + at * 0x100, 16, false),
                    (DATA + at * 0x1000, 4096, true),
                    (STATUS + at, 1, true),
                ],
            );
            let notify = must_notify(
                event_idx,
                r.ring.used_flags(),
                r.ring.avail_event(),
                i,
                i + 1,
            );
            // The first request may need a notification with EVENT_IDX (the device has not
            // moved avail_event yet); the second never does while the device polls.
            if i == 1 || !event_idx {
                assert!(
                    !notify,
                    "request {i} needed a notification while the device polled"
                );
            }
            wait_for("the request to complete", || r.ring.used_idx() == i + 1);
        }
        stop.store(true, Ordering::SeqCst);
        polling.join().unwrap();
    });
    for i in 0..2u64 {
        assert_eq!(r.status(STATUS + i), status::OK);
        let mut got = vec![0u8; 4096];
        r.mem
            .read_slice(&mut got, GuestAddress(DATA + i * 0x1000))
            .unwrap();
        let s = i as usize * 4096;
        assert_eq!(got, pattern(64 * 1024)[s..s + 4096]);
    }
    assert!(BlockMetrics::get(&metrics.polled) >= 1);
    // Polling ended with notifications on: the driver's next request notifies.
    assert!(must_notify(
        event_idx,
        r.ring.used_flags(),
        r.ring.avail_event(),
        2,
        3
    ));
}

fn served_while_polling_body() {
    served_while_polling(false);
}

fn served_while_polling_with_event_idx_body() {
    served_while_polling(true);
}

both_engines!(served_while_polling, served_while_polling_body);
both_engines!(
    served_while_polling_with_event_idx,
    served_while_polling_with_event_idx_body
);

//! Adaptive polling of a block queue: after a wake-up, the worker keeps watching the avail ring
//! and the io_uring completion ring for a short window before it sleeps again, with the
//! driver's notifications suppressed meanwhile. A request that arrives in the window costs the
//! guest no notification exit and the worker no sleep and wake-up.
//!
//! The window adapts to how long the worker actually slept (the idea of QEMU's `poll-max-ns`,
//! written anew): a sleep longer than the maximum means polling could not have helped, so the
//! window halves (down to off); a sleep the maximum would have covered doubles it (from
//! [`START`], up to the maximum). An idle guest therefore costs at most one window of spinning
//! per wake-up, and a device whose requests come slower than the maximum stops polling.

use std::time::{Duration, Instant};

use super::BlockMetrics;
use super::worker::{BlockWorker, Pass};
use crate::virtio::queue::QueueError;

/// The default longest window.
pub const DEFAULT_POLL_MAX: Duration = Duration::from_micros(32);
/// The first window after polling was off.
const START: Duration = Duration::from_micros(4);
/// The longest one polling episode runs while requests keep coming, before the worker goes back
/// to its event loop (which must see the stop event now and then).
const BUDGET: Duration = Duration::from_millis(1);

/// The polling state of one queue.
#[derive(Debug)]
pub struct Poller {
    max: Duration,
    window: Duration,
    /// When the worker last went to sleep (None: awake, or never slept yet).
    slept_at: Option<Instant>,
}

impl Poller {
    /// Polls for at most `max` per episode; `Duration::ZERO` turns polling off.
    pub fn new(max: Duration) -> Self {
        Self {
            max,
            window: max.min(START),
            slept_at: None,
        }
    }

    /// The worker woke up: adapts the window to how long it slept.
    pub fn woke(&mut self) {
        let Some(at) = self.slept_at.take() else {
            return;
        };
        if self.max.is_zero() {
            return;
        }
        let slept = at.elapsed();
        if slept > self.max {
            self.window /= 2;
            if self.window < Duration::from_micros(1) {
                self.window = Duration::ZERO;
            }
        } else if slept > self.window {
            self.window = (self.window * 2).max(START).min(self.max);
        }
    }

    /// The worker goes back to sleep.
    pub fn sleeping(&mut self) {
        self.slept_at = Some(Instant::now());
    }

    /// The current window (zero: do not poll).
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Forces the window (tests that need a long one without first sleeping short).
    #[cfg(test)]
    pub(super) fn set_window(&mut self, window: Duration) {
        self.window = window;
    }
}

impl BlockWorker {
    /// Serves a wake-up by polling: takes what is ready, then keeps watching the avail ring
    /// and io_uring's completions for the current window (restarted by each arrival), with
    /// the driver's notifications off, then turns them back on the way
    /// [`BlockWorker::process_queue`] does. Returns false, doing nothing, when the window is
    /// zero (the caller serves the wake-up without polling).
    pub fn poll(&mut self) -> bool {
        let window = self.poller.window();
        if window.is_zero() || self.queue.is_broken() {
            return false;
        }
        let start = Instant::now();
        let mut deadline = start + window;
        let mut first = true;
        let result = (|| -> Result<(), QueueError> {
            self.queue.suppress_notifications(&self.mem)?;
            BlockMetrics::add(&self.metrics.polls, 1);
            loop {
                let ready = self.queue.has_available(&self.mem)?
                    || self.uring.as_mut().is_some_and(|e| e.has_completions());
                let now = Instant::now();
                if ready {
                    let (mut taken, mut completed) = (0, 0);
                    let r = self.pass(&mut taken, &mut completed).map(|_: Pass| ());
                    if !first {
                        BlockMetrics::add(&self.metrics.polled, taken as u64);
                    }
                    self.end_batch(completed, r);
                    if self.queue.is_broken() || now - start > BUDGET {
                        return Ok(());
                    }
                    deadline = now + window;
                } else if now >= deadline {
                    return Ok(());
                }
                // What the wake-up brought is served; what comes from now on was polled.
                first = false;
                std::hint::spin_loop();
            }
        })();
        if let Err(e) = result {
            self.end_batch(0, Err(e));
            return true;
        }
        // Notifications that arrived while polling were served already: reset the eventfds
        // before the last look (a notification or completion after it wakes the worker
        // again), then serve what is left and turn notifications back on.
        let _ = self.queue.event().read();
        if self.uring.is_some() {
            self.process_completions();
        } else {
            self.process_queue();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slept(p: &mut Poller, d: Duration) {
        p.slept_at = Some(Instant::now() - d);
        p.woke();
    }

    #[test]
    fn the_window_follows_how_long_the_worker_slept() {
        // A maximum far above scheduling noise (so the sleeps below land where they should)
        // that doubling from START reaches exactly.
        let max = START * (1 << 18);
        let mut p = Poller::new(max);
        assert_eq!(p.window(), START);
        // Sleeps the maximum covers: a longer window would have caught the request, so it
        // doubles, up to the maximum.
        slept(&mut p, Duration::from_micros(10));
        assert_eq!(p.window(), START * 2);
        for _ in 0..20 {
            slept(&mut p, Duration::from_millis(900));
        }
        assert_eq!(p.window(), max);
        // Sleeps past the maximum: polling could not have helped, so it halves down to off.
        for _ in 0..30 {
            slept(&mut p, Duration::from_secs(5));
        }
        assert_eq!(p.window(), Duration::ZERO);
        // And starts again from START once sleeps get short.
        slept(&mut p, Duration::from_micros(3));
        assert_eq!(p.window(), START);
        // A wake-up without a recorded sleep changes nothing.
        p.woke();
        assert_eq!(p.window(), START);
    }

    #[test]
    fn a_zero_maximum_never_polls() {
        let mut p = Poller::new(Duration::ZERO);
        assert_eq!(p.window(), Duration::ZERO);
        slept(&mut p, Duration::from_micros(1));
        slept(&mut p, Duration::ZERO);
        assert_eq!(p.window(), Duration::ZERO);
    }
}

//! Counters for the network device.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the network device has done.
#[derive(Debug, Default)]
pub struct NetMetrics {
    /// Frames sent by the guest to the tap.
    pub tx_frames: AtomicU64,
    /// Bytes sent (including headers).
    pub tx_bytes: AtomicU64,
    /// Frames delivered to the guest.
    pub rx_frames: AtomicU64,
    /// Bytes delivered (including headers).
    pub rx_bytes: AtomicU64,
    /// Times reading the tap stopped because the guest had no receive buffers.
    pub rx_backpressure: AtomicU64,
    /// Frames dropped: too big for the guest's buffers, or refused by the tap.
    pub dropped: AtomicU64,
}

impl NetMetrics {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

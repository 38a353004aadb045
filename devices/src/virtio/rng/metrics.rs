//! Counters for the entropy device.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the entropy device has done.
#[derive(Debug, Default)]
pub struct RngMetrics {
    /// Requests completed.
    pub requests: AtomicU64,
    /// Random bytes given to the guest.
    pub bytes: AtomicU64,
    /// Requests refused (malformed or failed).
    pub errors: AtomicU64,
}

impl RngMetrics {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

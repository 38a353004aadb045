//! Counters for the block device.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the block device has done, across its queues.
#[derive(Debug, Default)]
pub struct BlockMetrics {
    /// Read requests completed.
    pub reads: AtomicU64,
    /// Write requests completed.
    pub writes: AtomicU64,
    /// Bytes read from the image into guest memory.
    pub read_bytes: AtomicU64,
    /// Bytes written from guest memory to the image.
    pub write_bytes: AtomicU64,
    /// Flushes completed.
    pub flushes: AtomicU64,
    /// Discard and write-zeroes requests completed.
    pub discards: AtomicU64,
    /// Requests answered with an error status (malformed or failed).
    pub errors: AtomicU64,
    /// Batches completed (one interrupt decision each).
    pub batches: AtomicU64,
    /// Polling episodes (a worker watching its rings after a wake-up).
    pub polls: AtomicU64,
    /// Chains the worker found while polling, with no notification from the driver.
    pub polled: AtomicU64,
}

impl BlockMetrics {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

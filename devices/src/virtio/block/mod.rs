//! virtio-blk over a raw image file: read, write, flush (fdatasync), get-id, discard and
//! write-zeroes (hole punching), read-only disks, several queues each on its own thread.

mod device;
mod disk;
mod event_handler;
mod metrics;
mod poll;
pub mod request;
mod uring;
mod worker;

pub use device::{Block, BlockConfig, BlockError, Engine};
pub use disk::{Disk, DiskError};
pub use event_handler::QUEUE_EVENT;
pub use metrics::BlockMetrics;
pub use poll::DEFAULT_POLL_MAX;
pub use worker::{BlockWorker, MAX_SEGMENTS, WorkerContext};

/// Data segments per request the device accepts (advertised as seg_max).
pub const SEG_MAX: u32 = 126;

/// virtio-blk feature bits (virtio 1.2, 5.2.3).
pub mod features {
    /// seg_max is valid.
    pub const SEG_MAX: u32 = 2;
    /// The disk is read-only.
    pub const RO: u32 = 5;
    /// blk_size is valid.
    pub const BLK_SIZE: u32 = 6;
    /// FLUSH is supported.
    pub const FLUSH: u32 = 9;
    /// num_queues is valid.
    pub const MQ: u32 = 12;
    /// DISCARD is supported.
    pub const DISCARD: u32 = 13;
    /// WRITE_ZEROES is supported.
    pub const WRITE_ZEROES: u32 = 14;
}

#[cfg(test)]
mod tests;

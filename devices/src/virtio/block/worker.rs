//! One block queue served by its own thread: pops requests, moves data between the image and
//! guest memory without a bounce buffer, answers with a status byte, signals once per batch.

use std::sync::Arc;

use log::{error, warn};

use super::BlockMetrics;
use super::disk::Disk;
use super::request::{HEADER_LEN, ID_LEN, Limits, Request, RequestError, status, write_status};
use crate::virtio::chain::Chain;
use crate::virtio::device::{ActiveQueue, DeviceHealth};
use crate::virtio::iov::{IoVecs, write_bytes};
use crate::virtio::queue::{DeviceQueue, LogLimiter};
use crate::virtio::{GuestMem, VirtioInterrupt};

pub(super) const NAME: &str = "virtio-blk";

/// The most buffers in one request: SEG_MAX data segments plus header and status.
pub const MAX_SEGMENTS: usize = super::SEG_MAX as usize + 2;

/// Everything one queue's worker owns.
#[derive(Debug)]
pub struct BlockWorker {
    mem: GuestMem,
    queue: DeviceQueue,
    chain: Chain,
    iov: IoVecs,
    disk: Arc<Disk>,
    limits: Limits,
    interrupt: Arc<dyn VirtioInterrupt>,
    health: Arc<DeviceHealth>,
    metrics: Arc<BlockMetrics>,
    bad_requests: LogLimiter,
}

/// The shared state a queue worker needs besides its queue.
#[derive(Debug, Clone)]
pub struct WorkerContext {
    /// Guest memory.
    pub mem: GuestMem,
    /// The image.
    pub disk: Arc<Disk>,
    /// Parse limits.
    pub limits: Limits,
    /// Interrupt.
    pub interrupt: Arc<dyn VirtioInterrupt>,
    /// Health flag.
    pub health: Arc<DeviceHealth>,
    /// Counters.
    pub metrics: Arc<BlockMetrics>,
    /// Negotiated features.
    pub features: u64,
}

impl BlockWorker {
    /// A worker for one queue.
    pub fn new(ctx: WorkerContext, queue: ActiveQueue) -> Self {
        Self {
            queue: DeviceQueue::new(NAME, queue, ctx.features, MAX_SEGMENTS),
            chain: Chain::with_capacity(MAX_SEGMENTS),
            iov: IoVecs::with_capacity(MAX_SEGMENTS * 2),
            mem: ctx.mem,
            disk: ctx.disk,
            limits: ctx.limits,
            interrupt: ctx.interrupt,
            health: ctx.health,
            metrics: ctx.metrics,
            bad_requests: LogLimiter::default(),
        }
    }

    /// The queue this worker serves.
    pub fn queue(&self) -> &DeviceQueue {
        &self.queue
    }

    /// Serves every available request; returns how many were completed.
    pub fn process_queue(&mut self) -> usize {
        let Self {
            mem,
            queue,
            chain,
            iov,
            disk,
            limits,
            interrupt,
            health,
            metrics,
            bad_requests,
        } = self;
        let index = queue.index();
        let n = queue.drain(mem, chain, interrupt, health, |chain| {
            execute(mem, disk, limits, iov, metrics, bad_requests, index, chain)
        });
        if n > 0 {
            BlockMetrics::add(&metrics.batches, 1);
        }
        n
    }
}

/// Runs one request synchronously; returns the bytes written to the guest's buffers.
#[allow(clippy::too_many_arguments)]
fn execute(
    mem: &GuestMem,
    disk: &Disk,
    limits: &Limits,
    iov: &mut IoVecs,
    metrics: &BlockMetrics,
    bad: &mut LogLimiter,
    queue: u16,
    chain: &Chain,
) -> u32 {
    let req = match Request::parse(mem, chain, limits) {
        Ok(r) => r,
        Err(e) => {
            BlockMetrics::add(&metrics.errors, 1);
            if bad.allow() {
                warn!(
                    "{NAME} queue {queue}: guest sent a bad request (head {}): {e}",
                    chain.head()
                );
            }
            if e == RequestError::NoStatus {
                return 0;
            }
            return match write_status(mem, chain, e.status()) {
                Ok(()) => 1,
                Err(_) => 0,
            };
        }
    };
    iov.clear();
    let result: Result<u64, String> = match req {
        Request::In { offset, len } => iov
            .push_range(mem, chain.writable(), 0, len)
            .map_err(|e| e.to_string())
            .and_then(|()| disk.read_at(iov, offset).map_err(|e| e.to_string()))
            .map(|()| {
                BlockMetrics::add(&metrics.reads, 1);
                BlockMetrics::add(&metrics.read_bytes, len);
                len
            }),
        Request::Out { offset, len } => iov
            .push_range(mem, chain.readable(), HEADER_LEN, len)
            .map_err(|e| e.to_string())
            .and_then(|()| disk.write_at(iov, offset).map_err(|e| e.to_string()))
            .map(|()| {
                BlockMetrics::add(&metrics.writes, 1);
                BlockMetrics::add(&metrics.write_bytes, len);
                0
            }),
        Request::Flush => disk
            .flush()
            .map(|()| {
                BlockMetrics::add(&metrics.flushes, 1);
                0
            })
            .map_err(|e| e.to_string()),
        Request::GetId => {
            // The status byte is the last writable byte; the id goes before it.
            let room = chain.writable_len().saturating_sub(1).min(ID_LEN as u64) as usize;
            write_bytes(&**mem, chain.writable(), 0, &disk.id()[..room])
                .map(|()| room as u64)
                .map_err(|e| e.to_string())
        }
        Request::Discard { offset, len } => disk
            .discard(offset, len)
            .map(|()| {
                BlockMetrics::add(&metrics.discards, 1);
                0
            })
            .map_err(|e| e.to_string()),
        Request::WriteZeroes { offset, len, unmap } => disk
            .write_zeroes(offset, len, unmap)
            .map(|()| {
                BlockMetrics::add(&metrics.discards, 1);
                0
            })
            .map_err(|e| e.to_string()),
    };
    iov.clear();
    let (st, written) = match result {
        Ok(n) => (status::OK, n),
        Err(e) => {
            BlockMetrics::add(&metrics.errors, 1);
            error!("{NAME} queue {queue}: {req:?} failed: {e}");
            (status::IOERR, 0)
        }
    };
    if write_status(mem, chain, st).is_err() {
        return 0;
    }
    // `written` is bounded by the chain length, which is below 4 GiB.
    (written + 1) as u32
}

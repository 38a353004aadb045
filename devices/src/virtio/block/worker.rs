//! One block queue served by its own thread: pops requests, moves data between the image and
//! guest memory without a bounce buffer, answers with a status byte, signals once per batch.

use std::sync::Arc;

use log::{error, warn};

use super::BlockMetrics;
use super::disk::Disk;
use super::poll::Poller;
use super::request::{HEADER_LEN, ID_LEN, Limits, Request, RequestError, status, write_status};
use super::uring::UringEngine;
use crate::virtio::chain::Chain;
use crate::virtio::device::{ActiveQueue, DeviceHealth};
use crate::virtio::iov::{IoVecs, write_bytes};
use crate::virtio::queue::{DeviceQueue, LogLimiter, Popped, QueueError};
use crate::virtio::{GuestMem, VirtioInterrupt};

pub(super) const NAME: &str = "virtio-blk";

/// The most buffers in one request: SEG_MAX data segments plus header and status.
pub const MAX_SEGMENTS: usize = super::SEG_MAX as usize + 2;

/// Everything one queue's worker owns.
#[derive(Debug)]
pub struct BlockWorker {
    pub(super) mem: GuestMem,
    pub(super) queue: DeviceQueue,
    chain: Chain,
    iov: IoVecs,
    disk: Arc<Disk>,
    limits: Limits,
    interrupt: Arc<dyn VirtioInterrupt>,
    health: Arc<DeviceHealth>,
    pub(super) metrics: Arc<BlockMetrics>,
    bad_requests: LogLimiter,
    pub(super) uring: Option<UringEngine>,
    pub(super) poller: Poller,
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
    /// Serve requests through io_uring (else synchronous system calls).
    pub use_uring: bool,
    /// The longest polling window after a wake-up (zero: never poll).
    pub poll_max: std::time::Duration,
}

impl BlockWorker {
    /// A worker for one queue.
    pub fn new(ctx: WorkerContext, queue: ActiveQueue) -> Self {
        let depth = virtio_queue::QueueT::size(&queue.queue);
        let index = queue.index;
        let uring = if ctx.use_uring {
            match UringEngine::new(depth) {
                Ok(e) => Some(e),
                Err(e) => {
                    warn!("{NAME} queue {index}: io_uring setup failed ({e}); synchronous backend");
                    None
                }
            }
        } else {
            None
        };
        Self {
            uring,
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
            poller: Poller::new(ctx.poll_max),
        }
    }

    /// The queue this worker serves.
    pub fn queue(&self) -> &DeviceQueue {
        &self.queue
    }

    /// The io_uring completion eventfd, when that backend is in use.
    pub fn completion_event(&self) -> Option<&vmm_sys_util::eventfd::EventFd> {
        self.uring.as_ref().map(UringEngine::completion_event)
    }

    /// Whether requests go through io_uring.
    pub fn uses_uring(&self) -> bool {
        self.uring.is_some()
    }

    /// Serves every available request, then re-enables the driver's notifications (checking
    /// for requests that raced with that). With io_uring, requests that finished while being
    /// submitted (page-cache hits) are answered in the same batch. Signals the guest once.
    /// Returns how many chains it took from the avail ring.
    pub fn process_queue(&mut self) -> usize {
        self.serve().0
    }

    /// Answers the requests io_uring finished and serves requests that arrived or were waiting
    /// for a free slot, signalling the guest once. Returns how many requests completed.
    pub fn process_completions(&mut self) -> usize {
        match self.uring.as_ref() {
            Some(engine) => engine.clear_event(),
            None => return 0,
        }
        self.serve().1
    }

    /// One batch: passes over the avail ring until it stays empty with notifications on (or
    /// every io_uring slot is busy), then one interrupt decision. Returns (chains taken,
    /// chains completed).
    fn serve(&mut self) -> (usize, usize) {
        if self.queue.is_broken() {
            return (0, 0);
        }
        let mut taken = 0;
        let mut completed = 0;
        let result = (|| -> Result<(), QueueError> {
            loop {
                self.queue.disable_notification(&self.mem)?;
                let pass = self.pass(&mut taken, &mut completed)?;
                if pass == Pass::Full || !self.queue.enable_notification(&self.mem)? {
                    return Ok(());
                }
            }
        })();
        self.end_batch(completed, result);
        (taken, completed)
    }

    /// Signals the guest for a batch of `completed` chains, or breaks the queue on `result`'s
    /// ring error (after getting the completed chains to the guest).
    pub(super) fn end_batch(&mut self, completed: usize, result: Result<(), QueueError>) {
        let result = result.and_then(|()| {
            if completed > 0 {
                self.queue.signal_used(&self.mem, self.interrupt.as_ref())?;
            }
            Ok(())
        });
        if completed > 0 {
            BlockMetrics::add(&self.metrics.batches, 1);
        }
        if let Err(e) = result {
            // Chains completed before the failure must still reach the guest.
            let _ = self.interrupt.signal_queue(self.queue.index());
            self.queue.fail(&e, &self.health, self.interrupt.as_ref());
        }
    }

    /// Takes every available chain (answering it, or starting it on io_uring while slots are
    /// free), submits the started ones with one system call and answers those already
    /// finished. Does not touch the notification state or signal.
    pub(super) fn pass(
        &mut self,
        taken: &mut usize,
        completed: &mut usize,
    ) -> Result<Pass, QueueError> {
        let Self {
            mem,
            queue,
            chain,
            iov,
            disk,
            limits,
            metrics,
            bad_requests,
            uring,
            ..
        } = self;
        let index = queue.index();
        let Some(engine) = uring.as_mut() else {
            loop {
                let (head, len) = match queue.pop(mem, chain)? {
                    Popped::Empty => return Ok(Pass::Empty),
                    Popped::Bad(head, _) => (head, 0),
                    Popped::Chain => (
                        chain.head(),
                        execute(mem, disk, limits, iov, metrics, bad_requests, index, chain),
                    ),
                };
                queue.complete(mem, head, len)?;
                *taken += 1;
                *completed += 1;
            }
        };
        loop {
            let popped = (|| -> Result<Pass, QueueError> {
                loop {
                    if !engine.has_room() {
                        return Ok(Pass::Full);
                    }
                    let (head, len) = match queue.pop(mem, chain)? {
                        Popped::Empty => return Ok(Pass::Empty),
                        Popped::Bad(head, _) => (head, 0),
                        Popped::Chain => {
                            match prepare(mem, limits, metrics, bad_requests, index, chain) {
                                Next::Answered(n) => (chain.head(), n),
                                Next::Run(req) => match engine.start(mem, disk, chain, req) {
                                    Ok(true) => {
                                        *taken += 1;
                                        continue;
                                    }
                                    Ok(false) => (
                                        chain.head(),
                                        run_sync(mem, disk, iov, metrics, index, chain, req),
                                    ),
                                    Err(e) => {
                                        error!("{NAME} queue {index}: starting {req:?}: {e}");
                                        BlockMetrics::add(&metrics.errors, 1);
                                        let ok = write_status(mem, chain, status::IOERR).is_ok();
                                        (chain.head(), u32::from(ok))
                                    }
                                },
                            }
                        }
                    };
                    queue.complete(mem, head, len)?;
                    *taken += 1;
                    *completed += 1;
                }
            })();
            // One system call for the whole batch, also when the ring failed midway.
            engine.submit();
            let pass = popped?;
            let reaped = reap(engine, mem, queue, disk, metrics)?;
            *completed += reaped;
            // Reaping freed slots: keep taking requests that were waiting for one.
            if pass == Pass::Empty || reaped == 0 {
                return Ok(pass);
            }
        }
    }
}

/// How a pass over the avail ring ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pass {
    /// The ring had no more chains.
    Empty,
    /// Every io_uring slot is busy; the rest waits for completions.
    Full,
}

/// Puts the requests io_uring finished into the used ring; returns how many.
fn reap(
    engine: &mut UringEngine,
    mem: &GuestMem,
    queue: &mut DeviceQueue,
    disk: &Disk,
    metrics: &BlockMetrics,
) -> Result<usize, QueueError> {
    let mut n = 0usize;
    let mut err = None;
    engine.reap(mem, disk, metrics, |c| {
        if err.is_none() {
            match queue.complete(mem, c.head, c.used_len) {
                Ok(()) => n += 1,
                Err(e) => err = Some(e),
            }
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok(n),
    }
}

/// Either the request was answered already (with the used length), or it is ready to run.
enum Next {
    Answered(u32),
    Run(Request),
}

/// Parses the request in `chain`; a malformed one is answered with an error status here.
fn prepare(
    mem: &GuestMem,
    limits: &Limits,
    metrics: &BlockMetrics,
    bad: &mut LogLimiter,
    queue: u16,
    chain: &Chain,
) -> Next {
    match Request::parse(mem, chain, limits) {
        Ok(r) => Next::Run(r),
        Err(e) => {
            BlockMetrics::add(&metrics.errors, 1);
            if bad.allow() {
                warn!(
                    "{NAME} queue {queue}: guest sent a bad request (head {}): {e}",
                    chain.head()
                );
            }
            if e == RequestError::NoStatus {
                return Next::Answered(0);
            }
            Next::Answered(match write_status(mem, chain, e.status()) {
                Ok(()) => 1,
                Err(_) => 0,
            })
        }
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
    match prepare(mem, limits, metrics, bad, queue, chain) {
        Next::Answered(n) => n,
        Next::Run(req) => run_sync(mem, disk, iov, metrics, queue, chain, req),
    }
}

/// Runs a parsed request with blocking system calls.
fn run_sync(
    mem: &GuestMem,
    disk: &Disk,
    iov: &mut IoVecs,
    metrics: &BlockMetrics,
    queue: u16,
    chain: &Chain,
    req: Request,
) -> u32 {
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

//! The entropy device and its per-queue worker.

use std::sync::Arc;

use log::error;

use super::RngMetrics;
use crate::virtio::chain::Chain;
use crate::virtio::device::{
    ActivateError, ActivateParams, DeviceHealth, VirtioDevice, exact_queues,
};
use crate::virtio::features::{EVENT_IDX, INDIRECT_DESC, bit};
use crate::virtio::iov::IoVecs;
use crate::virtio::queue::DeviceQueue;
use crate::virtio::worker::{self, Worker};
use crate::virtio::{GuestMem, VirtioInterrupt, device_type};

const NAME: &str = "virtio-rng";
const QUEUE_SIZES: [u16; 1] = [256];
const MAX_SEGMENTS: usize = 64;
/// The most bytes one request gets; bounds the time one guest request can take.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// The entropy device.
#[derive(Debug, Default)]
pub struct Rng {
    worker: Option<Worker<RngWorker>>,
    metrics: Arc<RngMetrics>,
}

impl Rng {
    /// A new entropy device.
    pub fn new() -> Self {
        Self::default()
    }

    /// The device's counters.
    pub fn metrics(&self) -> &Arc<RngMetrics> {
        &self.metrics
    }
}

/// Serves the request queue of a running entropy device.
#[derive(Debug)]
pub struct RngWorker {
    mem: GuestMem,
    queue: DeviceQueue,
    chain: Chain,
    iov: IoVecs,
    interrupt: Arc<dyn VirtioInterrupt>,
    health: Arc<DeviceHealth>,
    metrics: Arc<RngMetrics>,
}

fn fill_random(iov: &IoVecs) -> std::io::Result<()> {
    for v in iov.as_slice() {
        let mut done = 0usize;
        while done < v.iov_len {
            // SAFETY: the iovec points into guest memory that `IoVecs::push_range` checked to be
            // mapped and writable for `iov_len` bytes, and the memory outlives this call.
            let n = unsafe {
                libc::getrandom(
                    v.iov_base.cast::<u8>().add(done).cast(),
                    v.iov_len - done,
                    0,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            // n >= 0 was checked above.
            done += n as usize;
        }
    }
    Ok(())
}

impl RngWorker {
    /// A worker for `params` (which must hold exactly the request queue).
    pub fn new(params: ActivateParams, metrics: Arc<RngMetrics>) -> Result<Self, ActivateError> {
        let ActivateParams {
            mem,
            queues,
            interrupt,
            health,
            features,
        } = params;
        let [queue] = exact_queues(NAME, queues)?;
        let queue = DeviceQueue::new(NAME, queue, features, MAX_SEGMENTS);
        Ok(Self {
            mem,
            queue,
            chain: Chain::with_capacity(MAX_SEGMENTS),
            iov: IoVecs::with_capacity(MAX_SEGMENTS * 2),
            interrupt,
            health,
            metrics,
        })
    }

    /// The request queue.
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
            interrupt,
            health,
            metrics,
        } = self;
        queue.drain(mem, chain, interrupt, health, |chain| {
            let want = chain.writable_len().min(MAX_REQUEST_BYTES as u64);
            iov.clear();
            let result = iov
                .push_range(mem, chain.writable(), 0, want)
                .map_err(|e| e.to_string())
                .and_then(|()| fill_random(iov).map_err(|e| e.to_string()));
            iov.clear();
            match result {
                Ok(()) => {
                    RngMetrics::add(&metrics.requests, 1);
                    RngMetrics::add(&metrics.bytes, want);
                    // `want` is at most MAX_REQUEST_BYTES.
                    want as u32
                }
                Err(e) => {
                    error!("{NAME}: filling a request: {e}");
                    RngMetrics::add(&metrics.errors, 1);
                    0
                }
            }
        })
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        device_type::RNG
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        bit(EVENT_IDX) | bit(INDIRECT_DESC)
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        log::warn!("{NAME}: guest wrote config offset {offset:#x}; the device has no config");
    }

    fn activate(&mut self, params: ActivateParams) -> Result<(), ActivateError> {
        let metrics = self.metrics.clone();
        let active = self.worker.is_some();
        self.worker = Some(worker::start_once(active, NAME, || {
            RngWorker::new(params, metrics)
        })?);
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(w) = self.worker.take() {
            w.stop();
        }
    }
}

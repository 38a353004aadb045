//! The block device as the transport sees it: features, configuration space, activation.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use log::{info, warn};

use super::disk::{Disk, DiskError};
use super::request::Limits;
use super::worker::{BlockWorker, NAME, WorkerContext};
use super::{BlockMetrics, DEFAULT_POLL_MAX, SEG_MAX, features as blk, uring};
use crate::virtio::device::{ActivateError, ActivateParams, VirtioDevice, read_config_bytes};
use crate::virtio::device_type;
use crate::virtio::features::{EVENT_IDX, INDIRECT_DESC, bit};
use crate::virtio::worker::{self, Worker};

/// Errors from creating a block device.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The image could not be used.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// num_queues outside 1..=16.
    #[error("block device num_queues={0}: must be 1..=16")]
    NumQueues(u16),
    /// Queue size not a power of two in 2..=1024.
    #[error("block device queue_size={0}: must be a power of two in 2..=1024")]
    QueueSize(u16),
    /// io_uring was required but does not work here.
    #[error("block device {path}: io_uring required but unavailable: {source}")]
    NoUring {
        /// The image.
        path: PathBuf,
        /// Why io_uring failed.
        #[source]
        source: std::io::Error,
    },
}

/// Which backend serves requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// io_uring where the kernel allows it, else synchronous system calls (logged at start).
    #[default]
    Auto,
    /// Blocking preadv/pwritev/fdatasync on the queue's thread.
    Sync,
    /// io_uring, or fail.
    IoUring,
}

/// How to build a block device.
#[derive(Debug, Clone)]
pub struct BlockConfig {
    /// The raw image.
    pub path: PathBuf,
    /// Refuse writes.
    pub read_only: bool,
    /// Open with O_DIRECT.
    pub direct: bool,
    /// Number of request queues.
    pub num_queues: u16,
    /// Size of each queue.
    pub queue_size: u16,
    /// Id string for GET_ID (default from the file's inode).
    pub id: Option<String>,
    /// Backend choice.
    pub engine: Engine,
}

impl BlockConfig {
    /// One queue of 256, read-write, page cache.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            read_only: false,
            direct: false,
            num_queues: 1,
            queue_size: 256,
            id: None,
            engine: Engine::Auto,
        }
    }
}

/// A virtio-blk device.
#[derive(Debug)]
pub struct Block {
    disk: Arc<Disk>,
    features: u64,
    config: [u8; 60],
    queue_sizes: Vec<u16>,
    workers: Vec<Worker<BlockWorker>>,
    metrics: Arc<BlockMetrics>,
    use_uring: bool,
    poll_max: Duration,
}

impl Block {
    /// Opens the image and builds the device.
    pub fn new(cfg: &BlockConfig) -> Result<Self, BlockError> {
        if cfg.num_queues == 0 || cfg.num_queues > 16 {
            return Err(BlockError::NumQueues(cfg.num_queues));
        }
        if cfg.queue_size < 2 || cfg.queue_size > 1024 || !cfg.queue_size.is_power_of_two() {
            return Err(BlockError::QueueSize(cfg.queue_size));
        }
        let disk = Disk::open(&cfg.path, cfg.read_only, cfg.direct, cfg.id.as_deref())?;
        let mut features = bit(EVENT_IDX)
            | bit(INDIRECT_DESC)
            | bit(blk::SEG_MAX)
            | bit(blk::BLK_SIZE)
            | bit(blk::FLUSH);
        if cfg.read_only {
            features |= bit(blk::RO);
        } else {
            features |= bit(blk::DISCARD) | bit(blk::WRITE_ZEROES);
        }
        if cfg.num_queues > 1 {
            features |= bit(blk::MQ);
        }
        let mut config = [0u8; 60];
        config[0..8].copy_from_slice(&disk.capacity().to_le_bytes());
        config[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        config[20..24].copy_from_slice(&512u32.to_le_bytes());
        config[34..36].copy_from_slice(&cfg.num_queues.to_le_bytes());
        let max_sectors = u32::MAX >> 9;
        config[36..40].copy_from_slice(&max_sectors.to_le_bytes()); // max_discard_sectors
        config[40..44].copy_from_slice(&1u32.to_le_bytes()); // max_discard_seg
        config[44..48].copy_from_slice(&8u32.to_le_bytes()); // discard_sector_alignment (4 KiB)
        config[48..52].copy_from_slice(&max_sectors.to_le_bytes()); // max_write_zeroes_sectors
        config[52..56].copy_from_slice(&1u32.to_le_bytes()); // max_write_zeroes_seg
        config[56] = 1; // write_zeroes_may_unmap
        info!(
            "{NAME}: {} ({} sectors{}{}, {} queue(s))",
            cfg.path.display(),
            disk.capacity(),
            if cfg.read_only { ", read-only" } else { "" },
            if cfg.direct { ", O_DIRECT" } else { "" },
            cfg.num_queues
        );
        let use_uring = match cfg.engine {
            Engine::Sync => {
                info!(
                    "{NAME}: {}: synchronous backend (configured)",
                    cfg.path.display()
                );
                false
            }
            Engine::Auto => {
                let probe = uring::probe();
                uring::log_choice(&cfg.path, probe.as_ref().map(|_| ()));
                probe.is_ok()
            }
            Engine::IoUring => {
                uring::probe().map_err(|source| BlockError::NoUring {
                    path: cfg.path.clone(),
                    source,
                })?;
                uring::log_choice(&cfg.path, Ok(()));
                true
            }
        };
        Ok(Self {
            disk: Arc::new(disk),
            features,
            config,
            queue_sizes: vec![cfg.queue_size; usize::from(cfg.num_queues)],
            workers: Vec::new(),
            metrics: Arc::new(BlockMetrics::default()),
            use_uring,
            poll_max: DEFAULT_POLL_MAX,
        })
    }

    /// The device's counters.
    pub fn metrics(&self) -> &Arc<BlockMetrics> {
        &self.metrics
    }

    /// Sets the longest window a queue worker polls its rings after a wake-up (default
    /// [`DEFAULT_POLL_MAX`]; zero turns polling off). Applies to queues activated afterwards.
    pub fn set_poll_max(&mut self, max: Duration) {
        self.poll_max = max;
    }

    /// Whether queues are served through io_uring.
    pub fn uses_uring(&self) -> bool {
        self.use_uring
    }

    /// The parse limits for this disk.
    pub fn limits(&self) -> Limits {
        Limits {
            capacity: self.disk.capacity(),
            read_only: self.disk.read_only(),
            max_discard_seg: 1,
        }
    }

    /// A worker for one queue, served on the caller's thread (tests and benchmarks).
    pub fn worker_for(
        &self,
        params: &ActivateParams,
        queue: crate::virtio::ActiveQueue,
    ) -> BlockWorker {
        BlockWorker::new(self.context(params), queue)
    }

    fn context(&self, params: &ActivateParams) -> WorkerContext {
        WorkerContext {
            mem: params.mem.clone(),
            disk: self.disk.clone(),
            limits: self.limits(),
            interrupt: params.interrupt.clone(),
            health: params.health.clone(),
            metrics: self.metrics.clone(),
            features: params.features,
            use_uring: self.use_uring,
            poll_max: self.poll_max,
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        warn!(
            "{NAME}: guest wrote {} bytes at config offset {offset:#x}; the configuration is read-only",
            data.len()
        );
    }

    fn activate(&mut self, mut params: ActivateParams) -> Result<(), ActivateError> {
        if !self.workers.is_empty() {
            return Err(ActivateError::AlreadyActive { device: NAME });
        }
        if params.queues.is_empty() {
            return Err(ActivateError::QueueCount {
                device: NAME,
                expected: self.queue_sizes.len(),
                got: 0,
            });
        }
        let queues = std::mem::take(&mut params.queues);
        for q in queues {
            let name = format!("{NAME}-q{}", q.index);
            let w = BlockWorker::new(self.context(&params), q);
            match worker::spawn(name, w) {
                Ok(w) => self.workers.push(w),
                Err(source) => {
                    self.reset();
                    return Err(ActivateError::Worker {
                        device: NAME,
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    fn reset(&mut self) {
        for w in self.workers.drain(..) {
            w.stop();
        }
    }
}

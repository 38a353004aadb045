//! The vsock device as the transport sees it.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::{info, warn};

use super::mux::{Mux, NAME};
use super::{VsockMetrics, VsockWorker};
use crate::virtio::device::{
    ActivateError, ActivateParams, VirtioDevice, exact_queues, read_config_bytes,
};
use crate::virtio::device_type;
use crate::virtio::features::{EVENT_IDX, INDIRECT_DESC, bit};
use crate::virtio::worker::{self, Worker};

const QUEUE_SIZES: [u16; 3] = [256, 256, 16];

/// Errors from creating a vsock device.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The guest CID is reserved (0, 1, 2 or u32::MAX).
    #[error("vsock cid {0} is reserved; use 3 or above")]
    Cid(u64),
    /// The host socket could not be bound.
    #[error("vsock socket {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A virtio-vsock device.
#[derive(Debug)]
pub struct Vsock {
    cid: u64,
    uds: PathBuf,
    listener: UnixListener,
    worker: Option<Worker<VsockWorker>>,
    metrics: Arc<VsockMetrics>,
}

impl Vsock {
    /// A device for guest `cid`, listening for host clients at `uds`.
    pub fn new(cid: u64, uds: &Path) -> Result<Self, VsockError> {
        if cid <= 2 || cid == u64::from(u32::MAX) {
            return Err(VsockError::Cid(cid));
        }
        let bind_err = |source| VsockError::Bind {
            path: uds.to_owned(),
            source,
        };
        let listener = UnixListener::bind(uds).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        info!("{NAME}: guest cid {cid}, host socket {}", uds.display());
        Ok(Self {
            cid,
            uds: uds.to_owned(),
            listener,
            worker: None,
            metrics: Arc::new(VsockMetrics::default()),
        })
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<VsockMetrics> {
        &self.metrics
    }

    /// Builds the worker on the caller's thread (tests).
    pub fn worker_for(&self, params: ActivateParams) -> Result<VsockWorker, ActivateError> {
        let ActivateParams {
            mem,
            queues,
            interrupt,
            health,
            features,
        } = params;
        let queues: [_; 3] = exact_queues(NAME, queues)?;
        let listener = self
            .listener
            .try_clone()
            .map_err(|source| ActivateError::Worker {
                device: NAME,
                source,
            })?;
        let mux = Mux::new(self.cid, self.uds.clone(), listener, self.metrics.clone());
        Ok(VsockWorker::new(
            mem, queues, features, mux, interrupt, health,
        ))
    }
}

impl Drop for Vsock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.uds);
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        device_type::VSOCK
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

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.cid.to_le_bytes(), offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        warn!("{NAME}: guest wrote config offset {offset:#x}; the CID is fixed by the host");
    }

    fn activate(&mut self, params: ActivateParams) -> Result<(), ActivateError> {
        let active = self.worker.is_some();
        self.worker = Some(worker::start_once(active, NAME, || {
            self.worker_for(params)
        })?);
        Ok(())
    }

    fn reset(&mut self) {
        // Stopping the worker drops every connection: host clients see their socket close.
        if let Some(w) = self.worker.take() {
            w.stop();
        }
    }
}

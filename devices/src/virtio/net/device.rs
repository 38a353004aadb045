//! The network device as the transport sees it.

use std::sync::Arc;

use log::{info, warn};

use super::NetMetrics;
use super::features as net;
use super::tap::{Tap, TapError, offload};
use super::worker::{NAME, NetWorker};
use crate::virtio::device::{
    ActivateError, ActivateParams, VirtioDevice, exact_queues, read_config_bytes,
};
use crate::virtio::device_type;
use crate::virtio::features::{EVENT_IDX, INDIRECT_DESC, bit};
use crate::virtio::worker::{self, Worker};

const QUEUE_SIZES: [u16; 2] = [256, 256];

/// Errors from creating a network device.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The tap could not be opened.
    #[error(transparent)]
    Tap(#[from] TapError),
}

/// How to build a network device.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Tap interface name.
    pub tap: String,
    /// The guest's MAC address.
    pub mac: [u8; 6],
}

/// A virtio-net device.
#[derive(Debug)]
pub struct Net {
    tap: Tap,
    mac: [u8; 6],
    config: [u8; 8],
    worker: Option<Worker<NetWorker>>,
    metrics: Arc<NetMetrics>,
}

/// Maps the offloads the guest accepted to the tap's TUN_F_* flags.
pub fn tap_offloads(features: u64) -> u32 {
    let has = |b: u32| features & bit(b) != 0;
    let mut f = 0;
    if has(net::GUEST_CSUM) {
        f |= offload::CSUM;
        if has(net::GUEST_TSO4) {
            f |= offload::TSO4;
        }
        if has(net::GUEST_TSO6) {
            f |= offload::TSO6;
        }
        if has(net::GUEST_ECN) && (has(net::GUEST_TSO4) || has(net::GUEST_TSO6)) {
            f |= offload::TSO_ECN;
        }
    }
    f
}

impl Net {
    /// Opens the tap and builds the device.
    pub fn new(cfg: &NetConfig) -> Result<Self, NetError> {
        Ok(Self::with_tap(Tap::open(&cfg.tap)?, cfg.mac))
    }

    /// Builds the device on an already open tap.
    pub fn with_tap(tap: Tap, mac: [u8; 6]) -> Self {
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&mac);
        config[6..8].copy_from_slice(&1u16.to_le_bytes()); // VIRTIO_NET_S_LINK_UP
        info!(
            "{NAME}: tap {} mac {}",
            tap.name(),
            mac.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        );
        Self {
            tap,
            mac,
            config,
            worker: None,
            metrics: Arc::new(NetMetrics::default()),
        }
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<NetMetrics> {
        &self.metrics
    }

    /// The guest's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Builds the worker for `params` on the caller's thread (tests and benchmarks).
    pub fn worker_for(&self, params: ActivateParams) -> Result<NetWorker, ActivateError> {
        let ActivateParams {
            mem,
            queues,
            interrupt,
            health,
            features,
        } = params;
        let [rx, tx] = exact_queues(NAME, queues)?;
        let tap = self
            .tap
            .try_clone()
            .map_err(|source| ActivateError::Worker {
                device: NAME,
                source,
            })?;
        if let Err(e) = tap.set_offload(tap_offloads(features)) {
            warn!("{NAME}: {e}; continuing without offloads");
            let _ = tap.set_offload(0);
        }
        Ok(NetWorker::new(
            mem,
            rx,
            tx,
            tap,
            features,
            interrupt,
            health,
            self.metrics.clone(),
        ))
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        device_type::NET
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        bit(EVENT_IDX)
            | bit(INDIRECT_DESC)
            | bit(net::CSUM)
            | bit(net::GUEST_CSUM)
            | bit(net::MAC)
            | bit(net::GUEST_TSO4)
            | bit(net::GUEST_TSO6)
            | bit(net::GUEST_ECN)
            | bit(net::HOST_TSO4)
            | bit(net::HOST_TSO6)
            | bit(net::HOST_ECN)
            | bit(net::MRG_RXBUF)
            | bit(net::STATUS)
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        warn!(
            "{NAME}: guest wrote {} bytes at config offset {offset:#x}; the MAC is fixed by the host",
            data.len()
        );
    }

    fn activate(&mut self, params: ActivateParams) -> Result<(), ActivateError> {
        let active = self.worker.is_some();
        self.worker = Some(worker::start_once(active, NAME, || {
            self.worker_for(params)
        })?);
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(w) = self.worker.take() {
            w.stop();
        }
    }
}

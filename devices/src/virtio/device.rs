//! The device side of the virtio model: what every device implements, and what a transport hands
//! it when the driver has set DRIVER_OK.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use super::{GuestMem, VirtioInterrupt};

/// Errors from activating a device.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The transport handed over a different number of queues than the device has.
    #[error("{device}: expected {expected} queues, got {got}")]
    QueueCount {
        /// Device name.
        device: &'static str,
        /// Queues the device needs.
        expected: usize,
        /// Queues the driver enabled.
        got: usize,
    },
    /// The device is already running.
    #[error("{device}: activated twice without a reset")]
    AlreadyActive {
        /// Device name.
        device: &'static str,
    },
    /// Starting the device's worker (thread, eventfd, epoll) failed.
    #[error("{device}: starting its worker: {source}")]
    Worker {
        /// Device name.
        device: &'static str,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// One queue the driver enabled, ready to be served.
#[derive(Debug)]
pub struct ActiveQueue {
    /// Index of the queue within the device.
    pub index: u16,
    /// The ring state (addresses, size, EVENT_IDX), validated by the transport.
    pub queue: Queue,
    /// The ioeventfd the driver's notifications arrive on.
    pub event: EventFd,
}

/// A device's health as the transport reports it: set when the device needs a reset.
#[derive(Debug, Default)]
pub struct DeviceHealth {
    needs_reset: AtomicBool,
}

impl DeviceHealth {
    /// A healthy device.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the device broken (the transport then shows DEVICE_NEEDS_RESET in the status).
    pub fn set_needs_reset(&self) {
        self.needs_reset.store(true, Ordering::Release);
    }

    /// Whether the device needs a reset.
    pub fn needs_reset(&self) -> bool {
        self.needs_reset.load(Ordering::Acquire)
    }

    /// Clears the flag (on a device reset).
    pub fn clear(&self) {
        self.needs_reset.store(false, Ordering::Release);
    }
}

/// Everything a device needs to run, handed over when the driver sets DRIVER_OK.
#[derive(Debug)]
pub struct ActivateParams {
    /// The memory the guest shares with devices.
    pub mem: GuestMem,
    /// The enabled queues, in index order.
    pub queues: Vec<ActiveQueue>,
    /// How to interrupt the guest.
    pub interrupt: Arc<dyn VirtioInterrupt>,
    /// Where the device reports that it needs a reset.
    pub health: Arc<DeviceHealth>,
    /// The features the driver accepted (a subset of what the device offered).
    pub features: u64,
}

/// The enabled queues as exactly `N`, or an error naming the device and how many it got.
pub fn exact_queues<const N: usize>(
    device: &'static str,
    queues: Vec<ActiveQueue>,
) -> Result<[ActiveQueue; N], ActivateError> {
    let got = queues.len();
    queues.try_into().map_err(|_| ActivateError::QueueCount {
        device,
        expected: N,
        got,
    })
}

/// A virtio device, independent of its transport.
pub trait VirtioDevice: Send + std::fmt::Debug {
    /// The virtio device id (see [`super::device_type`]).
    fn device_type(&self) -> u32;
    /// A short name for log lines.
    fn name(&self) -> &'static str;
    /// The maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// The feature bits the device offers.
    fn features(&self) -> u64;
    /// Reads `data.len()` bytes of the device configuration space at `offset`; bytes past the end
    /// read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// A driver write to the configuration space; ignored (with a log line) where read-only.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts serving the queues.
    fn activate(&mut self, params: ActivateParams) -> Result<(), ActivateError>;
    /// Stops serving the queues (driver reset); the device can be activated again afterwards.
    fn reset(&mut self);
}

/// Copies `src[offset..]` into `data` (zero-filling past the end): the usual config-space read.
pub fn read_config_bytes(src: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(offset) = usize::try_from(offset) else {
        return;
    };
    if offset >= src.len() {
        return;
    }
    let n = data.len().min(src.len() - offset);
    data[..n].copy_from_slice(&src[offset..offset + n]);
}

//! What virtio-mmio and virtio-pci have in common: feature negotiation, the device status state
//! machine, per-queue configuration with its ioeventfd, activation and reset. Each transport maps
//! its registers onto a [`VirtioCommon`].

use std::sync::Arc;

use log::{debug, error, warn};
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::device::{ActivateParams, ActiveQueue, DeviceHealth, VirtioDevice};
use super::features::{ACCESS_PLATFORM, VERSION_1, bit};
use super::status::{ACKNOWLEDGE, DEVICE_NEEDS_RESET, DRIVER, DRIVER_OK, FAILED, FEATURES_OK};
use super::{GuestMem, VirtioInterrupt};

/// Errors from building a transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Creating a queue's ioeventfd failed.
    #[error("creating the ioeventfd of {device} queue {queue}: {source}")]
    QueueEvent {
        /// Device name.
        device: &'static str,
        /// Queue index.
        queue: usize,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A device declared a queue size the ring format cannot hold.
    #[error("{device} queue {queue}: maximum size {size} is not a power of two in 1..=32768")]
    QueueSize {
        /// Device name.
        device: &'static str,
        /// Queue index.
        queue: usize,
        /// The declared size.
        size: u16,
    },
}

/// Value of an MSI-X vector register meaning "no vector".
pub const NO_VECTOR: u16 = 0xffff;

/// The driver's configuration of one queue, as written through the transport's registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// The device's maximum.
    pub max_size: u16,
    /// The size the driver chose.
    pub size: u16,
    /// Whether the driver enabled the queue.
    pub ready: bool,
    /// Descriptor table address.
    pub desc: u64,
    /// Available (driver) ring address.
    pub avail: u64,
    /// Used (device) ring address.
    pub used: u64,
    /// MSI-X vector for this queue (PCI only).
    pub vector: u16,
}

impl QueueConfig {
    fn new(max_size: u16) -> Self {
        Self {
            max_size,
            size: max_size,
            ready: false,
            desc: 0,
            avail: 0,
            used: 0,
            vector: NO_VECTOR,
        }
    }
}

/// Why a queue configuration was refused at DRIVER_OK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueConfigError {
    /// Size zero, not a power of two or above the maximum.
    #[error("size {size} is not a power of two in 1..={max}")]
    Size {
        /// The size the driver wrote.
        size: u16,
        /// The device's maximum.
        max: u16,
    },
    /// A ring address that breaks the ring's alignment.
    #[error("{ring} address {addr:#x} is not {align}-byte aligned")]
    Align {
        /// Which ring.
        ring: &'static str,
        /// Its address.
        addr: u64,
        /// The alignment required.
        align: u64,
    },
    /// The avail ring at guest address 0, which virtio-queue treats as "not configured".
    #[error("the avail ring is at guest address 0")]
    AvailAtZero,
    /// A ring that is not entirely in guest memory.
    #[error(
        "a ring is not entirely in guest memory (desc {desc:#x}, avail {avail:#x}, used {used:#x})"
    )]
    Memory {
        /// Descriptor table address.
        desc: u64,
        /// Avail ring address.
        avail: u64,
        /// Used ring address.
        used: u64,
    },
}

/// Builds the virtio-queue state for a queue config, refusing anything a guest could abuse.
pub fn build_queue(cfg: &QueueConfig, mem: &GuestMem) -> Result<Queue, QueueConfigError> {
    let size_err = QueueConfigError::Size {
        size: cfg.size,
        max: cfg.max_size,
    };
    let mut q = Queue::new(cfg.max_size).map_err(|_| size_err)?;
    q.try_set_size(cfg.size).map_err(|_| size_err)?;
    for (ring, addr, align) in [
        ("descriptor table", cfg.desc, 16),
        ("avail ring", cfg.avail, 2),
        ("used ring", cfg.used, 4),
    ] {
        if addr % align != 0 {
            return Err(QueueConfigError::Align { ring, addr, align });
        }
    }
    if cfg.avail == 0 {
        return Err(QueueConfigError::AvailAtZero);
    }
    q.try_set_desc_table_address(vm_memory::GuestAddress(cfg.desc))
        .and_then(|()| q.try_set_avail_ring_address(vm_memory::GuestAddress(cfg.avail)))
        .and_then(|()| q.try_set_used_ring_address(vm_memory::GuestAddress(cfg.used)))
        .map_err(|_| QueueConfigError::Memory {
            desc: cfg.desc,
            avail: cfg.avail,
            used: cfg.used,
        })?;
    q.set_ready(true);
    if !q.is_valid(&**mem) {
        return Err(QueueConfigError::Memory {
            desc: cfg.desc,
            avail: cfg.avail,
            used: cfg.used,
        });
    }
    Ok(q)
}

/// The transport-independent state of one virtio device.
#[derive(Debug)]
pub struct VirtioCommon {
    device: Box<dyn VirtioDevice>,
    mem: GuestMem,
    offered: u64,
    status: u8,
    driver_features: u64,
    /// Selected 32-bit word of the device features.
    pub device_features_sel: u32,
    /// Selected 32-bit word of the driver features.
    pub driver_features_sel: u32,
    queue_sel: u16,
    queues: Vec<QueueConfig>,
    events: Vec<EventFd>,
    health: Arc<DeviceHealth>,
    /// Incremented whenever the configuration space changes under the driver.
    pub config_generation: u8,
    /// MSI-X vector for configuration changes (PCI only).
    pub config_vector: u16,
    active: bool,
}

impl VirtioCommon {
    /// Wraps `device`; `confidential` offers VIRTIO_F_ACCESS_PLATFORM.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMem,
        confidential: bool,
    ) -> Result<Self, TransportError> {
        let name = device.name();
        let mut queues = Vec::new();
        let mut events = Vec::new();
        for (i, &max) in device.queue_max_sizes().iter().enumerate() {
            if max == 0 || !max.is_power_of_two() || max > 32768 {
                return Err(TransportError::QueueSize {
                    device: name,
                    queue: i,
                    size: max,
                });
            }
            queues.push(QueueConfig::new(max));
            events.push(EventFd::new(EFD_NONBLOCK).map_err(|source| {
                TransportError::QueueEvent {
                    device: name,
                    queue: i,
                    source,
                }
            })?);
        }
        let mut offered = device.features() | bit(VERSION_1);
        if confidential {
            offered |= bit(ACCESS_PLATFORM);
        }
        Ok(Self {
            device,
            mem,
            offered,
            status: 0,
            driver_features: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            queue_sel: 0,
            queues,
            events,
            health: Arc::new(DeviceHealth::new()),
            config_generation: 0,
            config_vector: NO_VECTOR,
            active: false,
        })
    }

    /// The device.
    pub fn device(&self) -> &dyn VirtioDevice {
        self.device.as_ref()
    }

    /// The device, mutably (for configuration-space writes).
    pub fn device_mut(&mut self) -> &mut dyn VirtioDevice {
        self.device.as_mut()
    }

    /// The ioeventfd of each queue, for the VMM to register with KVM at the notify address.
    pub fn queue_events(&self) -> &[EventFd] {
        &self.events
    }

    /// Number of queues.
    pub fn num_queues(&self) -> usize {
        self.queues.len()
    }

    /// The device's health flag.
    pub fn health(&self) -> &Arc<DeviceHealth> {
        &self.health
    }

    /// Whether the device is running (DRIVER_OK was accepted).
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// The features the driver accepted.
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// The selected 32-bit word of the offered features.
    pub fn device_features_word(&self) -> u32 {
        match self.device_features_sel {
            0 => self.offered as u32,
            1 => (self.offered >> 32) as u32,
            _ => 0,
        }
    }

    /// A driver write of the selected 32-bit word of its features.
    pub fn set_driver_features_word(&mut self, value: u32) {
        if self.status & FEATURES_OK != 0 || self.status & DRIVER == 0 {
            warn!(
                "{}: guest wrote driver features {value:#x} outside feature negotiation (status {:#x}); ignored",
                self.device.name(),
                self.status
            );
            return;
        }
        let v = u64::from(value);
        match self.driver_features_sel {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | v,
            1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (v << 32),
            sel => warn!(
                "{}: guest wrote driver features word {sel}, which does not exist; ignored",
                self.device.name()
            ),
        }
    }

    /// The device status as the driver reads it.
    pub fn status(&self) -> u8 {
        if self.health.needs_reset() {
            self.status | DEVICE_NEEDS_RESET
        } else {
            self.status
        }
    }

    fn needs_reset(&mut self, why: std::fmt::Arguments<'_>) {
        error!("{}: {why}; device needs reset", self.device.name());
        self.health.set_needs_reset();
    }

    /// A driver write to the status register; `interrupt` is used if the device starts.
    /// Returns true if the device needs the transport to signal a configuration change.
    pub fn set_status(&mut self, value: u8, interrupt: &Arc<dyn VirtioInterrupt>) -> bool {
        let name = self.device.name();
        if value == 0 {
            self.reset();
            return false;
        }
        let value = value & !DEVICE_NEEDS_RESET;
        if value & self.status != self.status {
            warn!(
                "{name}: guest cleared status bits ({:#x} -> {value:#x}) without a reset; ignored",
                self.status
            );
            return false;
        }
        let new = value & !self.status;
        if new & FAILED != 0 {
            warn!("{name}: the guest driver gave up on the device (FAILED)");
            self.status = value;
            return false;
        }
        if new & FEATURES_OK != 0 {
            let unknown = self.driver_features & !self.offered;
            if unknown != 0 {
                warn!(
                    "{name}: guest accepted features {unknown:#x} that were never offered; FEATURES_OK refused"
                );
                self.status = value & !FEATURES_OK & !DRIVER_OK;
                return false;
            }
            if self.driver_features & bit(VERSION_1) == 0 {
                warn!(
                    "{name}: guest did not accept VERSION_1 (legacy drivers are not supported); FEATURES_OK refused"
                );
                self.status = value & !FEATURES_OK & !DRIVER_OK;
                return false;
            }
        }
        let want = value & (ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
        let order_ok = (want & DRIVER == 0 || want & ACKNOWLEDGE != 0)
            && (want & FEATURES_OK == 0 || want & DRIVER != 0)
            && (want & DRIVER_OK == 0 || want & FEATURES_OK != 0);
        if !order_ok {
            warn!("{name}: guest set status {value:#x} out of order; ignored");
            return false;
        }
        self.status = value;
        if new & DRIVER_OK != 0 {
            return self.activate(interrupt);
        }
        false
    }

    fn activate(&mut self, interrupt: &Arc<dyn VirtioInterrupt>) -> bool {
        let mut queues = Vec::new();
        for (i, cfg) in self.queues.iter().enumerate() {
            if !cfg.ready {
                continue;
            }
            let queue = match build_queue(cfg, &self.mem) {
                Ok(q) => q,
                Err(e) => {
                    self.needs_reset(format_args!("guest configured queue {i} badly: {e}"));
                    return true;
                }
            };
            let event = match self.events[i].try_clone() {
                Ok(e) => e,
                Err(e) => {
                    self.needs_reset(format_args!("cloning the ioeventfd of queue {i}: {e}"));
                    return true;
                }
            };
            queues.push(ActiveQueue {
                // `i` indexes the device's queues, whose count came from a u16-sized list.
                index: i as u16,
                queue,
                event,
            });
        }
        let params = ActivateParams {
            mem: self.mem.clone(),
            queues,
            interrupt: interrupt.clone(),
            health: self.health.clone(),
            features: self.driver_features,
        };
        match self.device.activate(params) {
            Ok(()) => {
                debug!("{}: activated", self.device.name());
                self.active = true;
                false
            }
            Err(e) => {
                self.needs_reset(format_args!("activation failed: {e}"));
                true
            }
        }
    }

    /// Device reset: stops the device and forgets everything the driver configured.
    pub fn reset(&mut self) {
        if self.active {
            self.device.reset();
            self.active = false;
        } else if self.status != 0 {
            // Also reset a device that failed to start, so it can be activated again.
            self.device.reset();
        }
        self.status = 0;
        self.driver_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        self.config_vector = NO_VECTOR;
        for q in &mut self.queues {
            *q = QueueConfig::new(q.max_size);
        }
        for e in &self.events {
            // Drop notifications that raced with the reset.
            let _ = e.read();
        }
        self.health.clear();
    }

    /// Selects the queue that the queue registers address.
    pub fn select_queue(&mut self, index: u16) {
        self.queue_sel = index;
    }

    /// The selected queue index.
    pub fn selected_queue(&self) -> u16 {
        self.queue_sel
    }

    /// The selected queue's configuration (None if the index is past the last queue).
    pub fn queue(&self) -> Option<&QueueConfig> {
        self.queues.get(usize::from(self.queue_sel))
    }

    /// Queue `index`'s configuration.
    pub fn queue_at(&self, index: u16) -> Option<&QueueConfig> {
        self.queues.get(usize::from(index))
    }

    /// Changes the selected queue's configuration, refusing once the device runs or the queue is
    /// enabled (virtio forbids changing an enabled queue).
    pub fn update_queue(&mut self, what: &str, f: impl FnOnce(&mut QueueConfig)) {
        let name = self.device.name();
        let sel = self.queue_sel;
        let active = self.active;
        match self.queues.get_mut(usize::from(sel)) {
            None => {
                warn!("{name}: guest wrote {what} of queue {sel}, which does not exist; ignored")
            }
            Some(_) if active => {
                warn!("{name}: guest wrote {what} of queue {sel} while the device runs; ignored")
            }
            Some(q) if q.ready && what != "ready" => {
                warn!("{name}: guest wrote {what} of enabled queue {sel}; ignored")
            }
            Some(q) => f(q),
        }
    }

    /// Sets the MSI-X vector of the selected queue (PCI); allowed while the device runs.
    pub fn set_queue_vector(&mut self, vector: u16) {
        if let Some(q) = self.queues.get_mut(usize::from(self.queue_sel)) {
            q.vector = vector;
        }
    }

    /// A notification written to the transport's register instead of arriving through an
    /// ioeventfd (the VMM registers ioeventfds, so this only happens without KVM, e.g. in tests).
    pub fn notify(&self, queue: u32) {
        match usize::try_from(queue).ok().and_then(|q| self.events.get(q)) {
            Some(e) => {
                if let Err(err) = e.write(1) {
                    error!("{}: signalling queue {queue}: {err}", self.device.name());
                }
            }
            None => warn!(
                "{}: guest notified queue {queue}, which does not exist; ignored",
                self.device.name()
            ),
        }
    }
}

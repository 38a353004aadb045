//! Virtio: the device model shared by both transports, the queue handling that treats every ring as
//! hostile, the transports (virtio-mmio v2 here, virtio-pci in `crate::pci`) and the devices.
//!
//! Threading: a transport lives on the bus and is driven by vCPU threads; when the driver sets
//! DRIVER_OK the transport hands the queues, their ioeventfds, guest memory and an interrupt to
//! the device, which serves them on its own thread(s) with an `event-manager` loop
//! ([`worker`]). See `docs/virtio.md`.

pub mod block;
pub mod chain;
pub mod console;
pub mod device;
pub mod interrupt;
pub mod iov;
pub mod mmio;
pub mod net;
pub mod queue;
pub mod rng;
pub mod transport;
pub mod vsock;
pub mod worker;

#[cfg(any(test, feature = "test-utils"))]
pub mod testing;

#[cfg(test)]
mod fuzz_tests;

pub use device::{ActivateError, ActivateParams, ActiveQueue, DeviceHealth, VirtioDevice};
pub use interrupt::{InterruptError, VirtioInterrupt};

/// Guest memory as devices see it: only memory the guest shares with the host (for confidential
/// guests the VMM never puts private memory in here).
pub type GuestMem = std::sync::Arc<vm_memory::GuestMemoryMmap<()>>;

/// Virtio device ids (virtio 1.2, section 5).
pub mod device_type {
    /// Network card.
    pub const NET: u32 = 1;
    /// Block device.
    pub const BLOCK: u32 = 2;
    /// Console.
    pub const CONSOLE: u32 = 3;
    /// Entropy source.
    pub const RNG: u32 = 4;
    /// Socket device.
    pub const VSOCK: u32 = 19;
}

/// Device-independent feature bits (virtio 1.2, section 6).
pub mod features {
    /// The driver may use indirect descriptor tables.
    pub const INDIRECT_DESC: u32 = 28;
    /// used_event / avail_event notification suppression.
    pub const EVENT_IDX: u32 = 29;
    /// Virtio 1.x (modern) device; every Veil device offers it.
    pub const VERSION_1: u32 = 32;
    /// The device accesses memory through a platform translation (offered to confidential guests).
    pub const ACCESS_PLATFORM: u32 = 33;

    /// The feature mask for bit `bit`.
    pub const fn bit(bit: u32) -> u64 {
        1u64 << bit
    }
}

/// Device status bits (virtio 1.2, section 2.1).
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u8 = 2;
    /// The driver is ready to drive the device.
    pub const DRIVER_OK: u8 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u8 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u8 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u8 = 0x80;
}

//! Veil's devices: the I/O bus, legacy devices and virtio transports and devices.
//!
//! Devices never depend on the VMM: guest memory and interrupts reach them through traits.

pub mod bus;
pub mod legacy;
pub mod pci;
pub mod virtio;

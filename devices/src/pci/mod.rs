//! PCI: a host bridge reached through configuration mechanism #1 (ports 0xCF8/0xCFC) and an
//! ECAM window, configuration spaces with capabilities and BARs, BAR allocation, MSI-X, and the
//! modern (1.x) virtio-pci transport.

pub mod bar;
pub mod config;
pub mod msix;
pub mod root;
pub mod virtio_pci;

pub use bar::{BarAllocator, BarError};
pub use config::PciConfig;
pub use msix::{MsiMessage, MsiRouting, MsixState};
pub use root::{PciRoot, PciRootError};
pub use virtio_pci::VirtioPciDevice;

/// A device on the PCI bus: configuration space plus its BARs.
pub trait PciDevice: Send {
    /// A read of `data.len()` bytes (1, 2 or 4) at `offset` in the configuration space.
    fn config_read(&mut self, offset: u16, data: &mut [u8]);
    /// A write at `offset` in the configuration space.
    fn config_write(&mut self, offset: u16, data: &[u8]);
}

#[cfg(test)]
mod wiring_tests;

//! How devices raise interrupts: through a trait the transport implements (an MMIO interrupt line
//! or PCI MSI-X vectors), which in turn writes an irqfd the VMM registered with KVM.

use std::io;

/// Errors raised while signalling the guest.
#[derive(Debug, thiserror::Error)]
pub enum InterruptError {
    /// Writing the irqfd failed.
    #[error("writing the interrupt eventfd for {what}: {source}")]
    Irqfd {
        /// Which interrupt (queue or config).
        what: &'static str,
        /// The write error.
        #[source]
        source: io::Error,
    },
}

/// Something that can interrupt the guest on behalf of a virtio device.
///
/// Implementations must be cheap: the hot path calls [`VirtioInterrupt::signal_queue`] once per
/// batch of completed requests.
pub trait VirtioInterrupt: Send + Sync + std::fmt::Debug {
    /// The device put buffers in the used ring of queue `queue`.
    fn signal_queue(&self, queue: u16) -> Result<(), InterruptError>;
    /// The device changed its configuration space or status (e.g. DEVICE_NEEDS_RESET).
    fn signal_config(&self) -> Result<(), InterruptError>;
}

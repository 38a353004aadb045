//! virtio-net over a tap device: checksum and TSO offloads negotiated with the guest and set on
//! the tap, mergeable receive buffers, MAC from the configuration, backpressure on receive.

mod device;
mod event_handler;
mod metrics;
pub mod tap;
mod worker;

pub use device::{Net, NetConfig, NetError, tap_offloads};
pub use event_handler::{RX_QUEUE_EVENT, TAP_EVENT, TX_QUEUE_EVENT};
pub use metrics::NetMetrics;
pub use tap::{Tap, TapError};
pub use worker::NetWorker;

/// Length of the virtio-net header with VERSION_1 (struct virtio_net_hdr_v1).
pub const HDR_LEN: usize = 12;
/// The largest frame with its header: 64 KiB of GSO payload plus Ethernet and header.
pub const FRAME_MAX: usize = HDR_LEN + 65536 + 14 + 4;

/// virtio-net feature bits (virtio 1.2, 5.1.3).
pub mod features {
    /// The guest may send frames with partial checksums.
    pub const CSUM: u32 = 0;
    /// The guest accepts frames with partial checksums.
    pub const GUEST_CSUM: u32 = 1;
    /// The configuration holds a MAC address.
    pub const MAC: u32 = 5;
    /// The guest accepts TSOv4.
    pub const GUEST_TSO4: u32 = 7;
    /// The guest accepts TSOv6.
    pub const GUEST_TSO6: u32 = 8;
    /// The guest accepts TSO with ECN.
    pub const GUEST_ECN: u32 = 9;
    /// The device accepts TSOv4.
    pub const HOST_TSO4: u32 = 11;
    /// The device accepts TSOv6.
    pub const HOST_TSO6: u32 = 12;
    /// The device accepts TSO with ECN.
    pub const HOST_ECN: u32 = 13;
    /// Mergeable receive buffers.
    pub const MRG_RXBUF: u32 = 15;
    /// The configuration holds a link status.
    pub const STATUS: u32 = 16;
}

#[cfg(test)]
mod tests;

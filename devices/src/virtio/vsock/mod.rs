//! virtio-vsock with a userspace host side: guest stream sockets bridged to host Unix sockets
//! (Firecracker's protocol), with credit-based flow control in both directions.

mod conn;
mod device;
mod event_handler;
mod mux;
pub mod packet;
mod worker;

use std::sync::atomic::{AtomicU64, Ordering};

pub use conn::{CONN_BUF, ConnState};
pub use device::{Vsock, VsockError};
pub use event_handler::{CONN_EVENT_BASE, LISTENER_EVENT};
pub use mux::{MAX_CONNS, MAX_CONTROL, MAX_PKT_PAYLOAD, Mux};
pub use worker::VsockWorker;

/// Counters for the vsock device.
#[derive(Debug, Default)]
pub struct VsockMetrics {
    /// Connections opened (either direction).
    pub conns_opened: AtomicU64,
    /// Connections closed.
    pub conns_closed: AtomicU64,
    /// Payload bytes from the guest to the host.
    pub tx_bytes: AtomicU64,
    /// Payload bytes from the host to the guest.
    pub rx_bytes: AtomicU64,
    /// Resets sent to the guest.
    pub rst_sent: AtomicU64,
    /// Malformed or out-of-protocol packets from the guest.
    pub bad_packets: AtomicU64,
}

impl VsockMetrics {
    /// Adds `n` to `counter`.
    pub fn add(&self, counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn add_rst(&self) {
        self.add(&self.rst_sent, 1);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;

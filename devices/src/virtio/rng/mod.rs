//! virtio-rng: fills the guest's buffers straight from the kernel's CSPRNG (getrandom).

mod device;
mod event_handler;
mod metrics;

pub use device::{Rng, RngWorker};
pub use event_handler::QUEUE_EVENT;
pub use metrics::RngMetrics;

#[cfg(test)]
mod tests;

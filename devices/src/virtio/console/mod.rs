//! virtio-console (one port, no multiport): guest output goes to the same sink as the serial
//! port; guest input comes from an optional host file descriptor.

mod device;
mod event_handler;

pub use device::{Console, ConsoleMetrics, ConsoleSink, ConsoleWorker};
pub use event_handler::{INPUT_EVENT, RX_EVENT, TX_EVENT};

#[cfg(test)]
mod tests;

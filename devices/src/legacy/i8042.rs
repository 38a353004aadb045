//! The i8042 keyboard controller, reduced to what a VM needs: the CPU reset line (command `0xfe`
//! on port `0x64`), through vm-superio's model.

use std::sync::Arc;

use vm_superio::{I8042Device, Trigger};

use super::{ExitRequest, ExitSink};
use crate::bus::BusDevice;

/// The reset line: tells the VMM the guest reset the machine.
struct ResetLine(Arc<dyn ExitSink>);

impl Trigger for ResetLine {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.request_exit(ExitRequest::Reset);
        Ok(())
    }
}

/// The i8042: insert it on the bus twice, at `0x60` (data) and `0x64` (status/command), each
/// one port long; it tells the two apart by absolute port.
pub struct I8042(I8042Device<ResetLine>);

impl std::fmt::Debug for I8042 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("I8042")
    }
}

impl I8042 {
    /// An i8042 whose reset command reports to `sink`.
    pub fn new(sink: Arc<dyn ExitSink>) -> Self {
        Self(I8042Device::new(ResetLine(sink)))
    }
}

/// The first port of the i8042.
pub const I8042_BASE: u64 = 0x60;

fn port_offset(base: u64, offset: u64) -> Option<u8> {
    u8::try_from((base + offset).checked_sub(I8042_BASE)?).ok()
}

impl BusDevice for I8042 {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
        // vm-superio models the data port at offset 0 and the status/command port at offset 4.
        if let (Some(off), Some(first)) = (port_offset(base, offset), data.first_mut()) {
            *first = self.0.read(off);
        }
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        if let (Some(off), Some(&value)) = (port_offset(base, offset), data.first()) {
            // The only error the reset line can give is Infallible.
            let _ = self.0.write(off, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<ExitRequest>>);
    impl ExitSink for Recorder {
        fn request_exit(&self, request: ExitRequest) {
            self.0.lock().unwrap().push(request);
        }
    }

    #[test]
    fn command_fe_on_port_64_resets() {
        let rec = Arc::new(Recorder::default());
        let mut dev = I8042::new(rec.clone());
        dev.write(0x60, 0, &[0xfe]);
        assert!(rec.0.lock().unwrap().is_empty());
        dev.write(0x64, 0, &[0xfe]);
        assert_eq!(*rec.0.lock().unwrap(), vec![ExitRequest::Reset]);
    }
}

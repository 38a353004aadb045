//! Single-purpose ports: the boot marker (`0x80`), the debug exit (`0xf4`) and the ACPI
//! hardware-reduced sleep control register (`0x600`).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::{ExitRequest, ExitSink};
use crate::bus::BusDevice;

/// Port `0x80`: timestamps the guest's first write (its first instruction, for the probe guest),
/// measured from `origin` (the VMM's process start); later writes are ignored.
#[derive(Debug)]
pub struct BootMarker {
    origin: Instant,
    first_write: Arc<OnceLock<Duration>>,
}

impl BootMarker {
    /// A marker that measures from `origin`.
    pub fn new(origin: Instant) -> Self {
        Self {
            origin,
            first_write: Arc::new(OnceLock::new()),
        }
    }

    /// The time from `origin` to the first write, shared so the VMM can read it after the run.
    pub fn first_write(&self) -> Arc<OnceLock<Duration>> {
        self.first_write.clone()
    }
}

impl BusDevice for BootMarker {
    fn read(&mut self, _base: u64, _offset: u64, _data: &mut [u8]) {}

    fn write(&mut self, _base: u64, _offset: u64, _data: &[u8]) {
        if self.first_write.get().is_none() {
            let elapsed = self.origin.elapsed();
            if self.first_write.set(elapsed).is_ok() {
                log::debug!(
                    "boot timer: first write to port 0x80 at {:.3} ms after start",
                    elapsed.as_secs_f64() * 1e3
                );
            }
        }
    }
}

/// Port `0xf4`: a write of `v` ends the VMM with exit status `v & 0xff`.
pub struct DebugExit {
    sink: Arc<dyn ExitSink>,
}

impl std::fmt::Debug for DebugExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DebugExit")
    }
}

impl DebugExit {
    /// A debug-exit port that reports to `sink`.
    pub fn new(sink: Arc<dyn ExitSink>) -> Self {
        Self { sink }
    }
}

impl BusDevice for DebugExit {
    fn read(&mut self, _base: u64, _offset: u64, _data: &mut [u8]) {}

    fn write(&mut self, _base: u64, _offset: u64, data: &[u8]) {
        // The low byte of the value is the exit status, whatever the access width.
        if let Some(&low) = data.first() {
            self.sink.request_exit(ExitRequest::DebugExit(low));
        }
    }
}

/// The ACPI sleep control register of a hardware-reduced platform (FADT `SLEEP_CONTROL_REG`):
/// a write with SLP_EN (bit 5) and SLP_TYPx (bits 2..5) = 5, the S5 value the DSDT's `_S5_`
/// gives, powers the machine off. Reads (the sleep status register) return 0.
pub struct AcpiSleep {
    sink: Arc<dyn ExitSink>,
}

/// The SLP_TYPx value for S5 (soft off) that the DSDT advertises.
pub const SLP_TYP_S5: u8 = 5;
const SLP_EN: u8 = 1 << 5;

impl std::fmt::Debug for AcpiSleep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AcpiSleep")
    }
}

impl AcpiSleep {
    /// A sleep control register that reports power-off to `sink`.
    pub fn new(sink: Arc<dyn ExitSink>) -> Self {
        Self { sink }
    }
}

impl BusDevice for AcpiSleep {
    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        if let (0, Some(&v)) = (offset, data.first()) {
            if v & SLP_EN != 0 && (v >> 2) & 0x7 == SLP_TYP_S5 {
                self.sink.request_exit(ExitRequest::PowerOff);
            }
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
    fn boot_marker_keeps_the_first_write() {
        let mut marker = BootMarker::new(Instant::now());
        let first = marker.first_write();
        assert!(first.get().is_none());
        marker.write(0x80, 0, &[1]);
        let t = *first.get().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        marker.write(0x80, 0, &[2]);
        assert_eq!(*first.get().unwrap(), t);
    }

    #[test]
    fn sleep_register_powers_off_on_s5_only() {
        let rec = Arc::new(Recorder::default());
        let mut reg = AcpiSleep::new(rec.clone());
        reg.write(0x600, 0, &[SLP_TYP_S5 << 2]); // no SLP_EN
        reg.write(0x600, 0, &[(3 << 2) | SLP_EN]); // S3: not supported, ignored
        assert!(rec.0.lock().unwrap().is_empty());
        reg.write(0x600, 0, &[(SLP_TYP_S5 << 2) | SLP_EN]);
        assert_eq!(*rec.0.lock().unwrap(), vec![ExitRequest::PowerOff]);
    }

    #[test]
    fn debug_exit_reports_the_low_byte() {
        let rec = Arc::new(Recorder::default());
        let mut port = DebugExit::new(rec.clone());
        port.write(0xf4, 0, &[0x2a]);
        port.write(0xf4, 0, &[0x01, 0x02, 0, 0]);
        assert_eq!(
            *rec.0.lock().unwrap(),
            vec![ExitRequest::DebugExit(0x2a), ExitRequest::DebugExit(1)]
        );
    }
}

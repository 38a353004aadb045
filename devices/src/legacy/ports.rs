//! Two single-purpose ports: the boot marker (`0x80`) and the debug exit (`0xf4`).

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

//! [`VmHandle`]: a running guest, to wait for or stop.

use std::os::unix::thread::JoinHandleExt;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_ioctls::VmFd;
use veil_devices::legacy::Serial;
use vm_memory::GuestMemoryMmap;

use crate::config::BootProtocol;
use crate::device_manager::DeviceThreads;
use crate::exit::{ExitState, GuestExit};
use crate::platform::GuestMemfdVm;

/// A running guest. Dropping it stops the guest.
///
/// Veil kicks vCPU threads out of `KVM_RUN` with the real-time signal `SIGRTMIN` (a no-op
/// handler is installed for it at the first launch); embedders should leave that signal alone.
#[derive(Debug)]
pub struct VmHandle {
    pub(crate) exit: Arc<ExitState>,
    pub(crate) threads: Mutex<Vec<JoinHandle<()>>>,
    pub(crate) serial: Arc<Mutex<Serial>>,
    pub(crate) boot_time: Arc<OnceLock<Duration>>,
    pub(crate) protocol: BootProtocol,
    /// The virtio devices' service thread, which drops the devices once the vCPUs are gone.
    pub(crate) devices: DeviceThreads,
    /// The stdin reader, if a device takes stdin (it restores the terminal when stopped).
    pub(crate) stdin: Option<crate::stdin::StdinReader>,
    // Dropped after the vCPU threads are joined (`wait`/`Drop` join first).
    pub(crate) _vm: Arc<VmFd>,
    pub(crate) _memory: GuestMemoryMmap,
    /// Owner of the guest_memfd slots `_memory` is built on (dropped after it).
    pub(crate) _platform: Option<Arc<GuestMemfdVm>>,
}

/// The signal that kicks a vCPU thread out of KVM_RUN.
pub(crate) fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

pub(crate) extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Kicks every thread out of KVM_RUN until it has seen the end, then joins it.
pub(crate) fn stop_threads(threads: &mut Vec<JoinHandle<()>>) {
    // A kick can land just before a thread re-enters KVM_RUN, so kick again every millisecond
    // until each thread is out; most are out within microseconds of the first kick.
    let mut polls = 0u32;
    while threads.iter().any(|t| !t.is_finished()) {
        if polls % 50 == 0 {
            for t in threads.iter().filter(|t| !t.is_finished()) {
                // SAFETY: the thread has not been joined, so its pthread_t is valid; the signal
                // has a no-op handler installed by `launch`.
                unsafe { libc::pthread_kill(t.as_pthread_t(), kick_signal()) };
            }
        }
        polls += 1;
        std::thread::sleep(Duration::from_micros(20));
    }
    for t in threads.drain(..) {
        // Threads catch their own panics (see `launch`); join cannot fail in practice.
        let _ = t.join();
    }
}

impl VmHandle {
    /// Blocks until the guest ends, stops every vCPU and flushes the serial output.
    pub fn wait(&self) -> GuestExit {
        let exit = self.exit.wait();
        self.finish();
        exit
    }

    /// Ends the guest now (its exit becomes [`GuestExit::Stopped`] unless it already ended).
    pub fn stop(&self) {
        self.exit.set(GuestExit::Stopped);
        self.finish();
    }

    /// Time from the configured start to the guest's first write to port `0x80`.
    pub fn boot_time(&self) -> Option<Duration> {
        self.boot_time.get().copied()
    }

    /// The boot protocol the guest was entered through.
    pub fn protocol(&self) -> BootProtocol {
        self.protocol
    }

    fn finish(&self) {
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        stop_threads(&mut threads);
        self.devices.shutdown();
        if let Some(stdin) = &self.stdin {
            stdin.stop();
        }
        let mut serial = self.serial.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = serial.flush() {
            log::warn!("flushing serial output: {e}");
        }
    }
}

impl Drop for VmHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

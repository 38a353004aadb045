//! How a guest run ends, and the state vCPU threads and devices share to end it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

use veil_devices::legacy::{ExitRequest, ExitSink};

/// Why a vCPU stopped the guest on a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashReport {
    /// The vCPU that saw the failure.
    pub vcpu: u32,
    /// What happened (e.g. "triple fault (KVM_EXIT_SHUTDOWN)").
    pub reason: String,
    /// The vCPU's registers at that moment, formatted for people (empty if unreadable).
    pub registers: String,
}

/// How the guest's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestExit {
    /// The guest reset or shut the machine down (i8042 reset, ACPI S5, KVM system event): a
    /// clean end.
    Shutdown,
    /// The guest wrote this value to the debug-exit port `0xf4`.
    DebugExit(u8),
    /// [`crate::VmHandle::stop`] ended it.
    Stopped,
    /// A triple fault, a KVM internal error, a failed VM entry or a failed `KVM_RUN`.
    Crashed(CrashReport),
}

impl GuestExit {
    /// The process exit status `veil` uses for this end: 0 for a clean end, the debug-exit value,
    /// 1 for a crash.
    pub fn status(&self) -> i32 {
        match self {
            GuestExit::Shutdown | GuestExit::Stopped => 0,
            GuestExit::DebugExit(v) => i32::from(*v),
            GuestExit::Crashed(_) => 1,
        }
    }
}

/// The first exit wins; vCPU threads poll [`ExitState::is_done`] between runs.
#[derive(Debug, Default)]
pub(crate) struct ExitState {
    done: AtomicBool,
    exit: Mutex<Option<GuestExit>>,
    cond: Condvar,
}

impl ExitState {
    /// Records `exit` unless another one came first.
    pub(crate) fn set(&self, exit: GuestExit) {
        let mut slot = self.exit.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            log::debug!("guest exit: {exit:?}");
            *slot = Some(exit);
            self.done.store(true, Ordering::Release);
            self.cond.notify_all();
        }
    }

    /// Whether the guest has ended.
    pub(crate) fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Blocks until the guest ends.
    pub(crate) fn wait(&self) -> GuestExit {
        let mut slot = self.exit.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(exit) = slot.as_ref() {
                return exit.clone();
            }
            slot = self.cond.wait(slot).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl ExitSink for ExitState {
    fn request_exit(&self, request: ExitRequest) {
        self.set(match request {
            ExitRequest::Reset | ExitRequest::PowerOff => GuestExit::Shutdown,
            ExitRequest::DebugExit(v) => GuestExit::DebugExit(v),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn first_exit_wins_and_wakes_the_waiter() {
        let state = Arc::new(ExitState::default());
        let s2 = state.clone();
        let waiter = std::thread::spawn(move || s2.wait());
        state.request_exit(ExitRequest::DebugExit(3));
        state.set(GuestExit::Shutdown);
        assert!(state.is_done());
        assert_eq!(waiter.join().unwrap(), GuestExit::DebugExit(3));
        assert_eq!(GuestExit::DebugExit(3).status(), 3);
        assert_eq!(GuestExit::Shutdown.status(), 0);
    }
}

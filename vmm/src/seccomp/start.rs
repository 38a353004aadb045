//! Starting filtered threads: each vCPU thread installs its filter, reports the result, then
//! waits at a gate that opens only once every thread (and, if asked, the launching thread) is
//! filtered. No thread runs guest code unfiltered.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex};

use super::{Filters, Role, SeccompError, SeccompLevel, VcpuNeeds};

/// A one-shot gate: closed until [`Gate::open`], then open for good.
#[derive(Debug, Default)]
struct Gate {
    open: Mutex<bool>,
    cond: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        while !*open {
            open = self.cond.wait(open).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cond.notify_all();
    }
}

/// The launching side: hands out tickets to new threads, then opens the gate.
#[derive(Debug)]
pub(crate) struct ThreadStart {
    filters: Arc<Filters>,
    gate: Arc<Gate>,
    reports: Receiver<Result<(), SeccompError>>,
    report_to: Option<Sender<Result<(), SeccompError>>>,
}

/// A new thread's side: install the role's filter, report, wait for the gate.
#[derive(Debug)]
pub(crate) struct Ticket {
    filters: Arc<Filters>,
    gate: Arc<Gate>,
    report_to: Sender<Result<(), SeccompError>>,
}

impl ThreadStart {
    /// Compiles the filters for `level`.
    #[cfg(test)]
    pub(crate) fn new(level: SeccompLevel) -> Result<Self, SeccompError> {
        Self::with_vcpu_needs(level, VcpuNeeds::default())
    }

    /// Compiles the filters for `level`, the vCPU filter allowing what `needs` lists.
    pub(crate) fn with_vcpu_needs(
        level: SeccompLevel,
        needs: VcpuNeeds,
    ) -> Result<Self, SeccompError> {
        let (report_to, reports) = channel();
        Ok(ThreadStart {
            filters: Arc::new(Filters::with_vcpu_needs(level, needs)?),
            gate: Arc::new(Gate::default()),
            reports,
            report_to: Some(report_to),
        })
    }

    /// A ticket for one thread about to be spawned.
    pub(crate) fn ticket(&self) -> Ticket {
        Ticket {
            filters: self.filters.clone(),
            gate: self.gate.clone(),
            report_to: self
                .report_to
                .clone()
                .expect("tickets are handed out before `open`"),
        }
    }

    /// Installs the VMM thread's filter on the calling thread if `filter_caller`, waits until
    /// every ticketed thread reported, and opens the gate if all are filtered. On an error the
    /// gate stays closed: record the guest's end first, then [`ThreadStart::abort`].
    pub(crate) fn open(&mut self, filter_caller: bool) -> Result<(), SeccompError> {
        // Installed while the vCPU threads install theirs.
        let mut result = if filter_caller {
            self.filters.install(Role::Vmm)
        } else {
            Ok(())
        };
        self.report_to = None;
        // Ends when every ticket has reported (or its thread is gone).
        for report in self.reports.iter() {
            result = result.and(report);
        }
        if result.is_ok() {
            self.gate.open();
        }
        result
    }

    /// Opens the gate for threads that must now see the guest has ended and return.
    pub(crate) fn abort(&self) {
        self.gate.open();
    }
}

impl Ticket {
    /// Installs `role`'s filter on this thread, reports, and waits for the gate. False if the
    /// filter could not be installed: the thread must then return without running anything.
    pub(crate) fn enter(self, role: Role) -> bool {
        let result = self.filters.install(role);
        let ok = result.is_ok();
        let _ = self.report_to.send(result);
        drop(self.report_to);
        self.gate.wait();
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn threads_pass_the_gate_only_after_open() {
        let mut start = ThreadStart::new(SeccompLevel::Off).unwrap();
        let passed = Arc::new(AtomicBool::new(false));
        let (ticket, p) = (start.ticket(), passed.clone());
        let t = std::thread::spawn(move || {
            let ok = ticket.enter(Role::Vcpu);
            p.store(true, Ordering::SeqCst);
            ok
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!passed.load(Ordering::SeqCst));
        start.open(false).unwrap();
        assert!(t.join().unwrap());
        assert!(passed.load(Ordering::SeqCst));
    }

    #[test]
    fn open_waits_for_every_report() {
        let mut start = ThreadStart::new(SeccompLevel::Off).unwrap();
        let tickets: Vec<_> = (0..3).map(|_| start.ticket()).collect();
        let threads: Vec<_> = tickets
            .into_iter()
            .map(|t| std::thread::spawn(move || t.enter(Role::Vcpu)))
            .collect();
        start.open(false).unwrap();
        assert!(threads.into_iter().all(|t| t.join().unwrap()));
    }

    #[test]
    fn a_dropped_ticket_does_not_block_open() {
        let mut start = ThreadStart::new(SeccompLevel::Off).unwrap();
        drop(start.ticket());
        start.open(false).unwrap();
    }
}

//! The start gate: threads install their filter, report the result, then wait here until the
//! launching thread has its own filter and opens the gate. No thread runs guest code unfiltered.

use std::sync::{Condvar, Mutex};

/// A one-shot gate: closed until [`StartGate::open`], then open for good.
#[derive(Debug, Default)]
pub(crate) struct StartGate {
    open: Mutex<bool>,
    cond: Condvar,
}

impl StartGate {
    /// Blocks until the gate opens.
    pub(crate) fn wait(&self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        while !*open {
            open = self.cond.wait(open).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Opens the gate and wakes every waiter.
    pub(crate) fn open(&self) {
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cond.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn waiters_pass_only_after_open() {
        let gate = Arc::new(StartGate::default());
        let passed = Arc::new(AtomicBool::new(false));
        let (g, p) = (gate.clone(), passed.clone());
        let t = std::thread::spawn(move || {
            g.wait();
            p.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!passed.load(Ordering::SeqCst));
        gate.open();
        t.join().unwrap();
        assert!(passed.load(Ordering::SeqCst));
        gate.wait(); // stays open
    }
}

//! The device service thread: where guest register writes that activate or reset a device, and
//! PCI configuration writes (which may move a BAR), are carried out.
//!
//! docs/security.md: activating a device creates io_uring rings, eventfds and epoll sets, sets
//! tap offloads and starts worker threads, and a BAR move re-binds ioeventfds; the vCPU seccomp
//! role allows none of that. So the vCPU thread that sees such a write hands it to this thread
//! (which runs under the VMM role's filter) and waits for it to be done, so the guest sees the
//! write complete in order. Every device worker thread is started from here, and the devices are
//! dropped here too (their teardown closes and unlinks host resources, e.g. the vsock socket):
//! the thread keeps a reference to every transport and lets go of them when the VM is done
//! ([`DeviceThreads::shutdown`]).

use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::seccomp::{self, Role, SeccompLevel};

/// What the thread keeps alive until it ends.
type Kept = Vec<Box<dyn Send>>;
type Job = Box<dyn FnOnce(&mut Kept) + Send>;

/// A handle on the device service thread; the thread ends when the last handle is dropped.
/// A VM without virtio devices has no thread: the few jobs (host bridge configuration writes)
/// then run in place.
#[derive(Debug)]
pub(crate) struct DeviceService {
    jobs: Option<Sender<Job>>,
}

/// Errors from starting the thread.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The thread could not be spawned.
    #[error("starting the device service thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// Its seccomp filter could not be installed.
    #[error("the device service thread's seccomp filter: {0} (try --seccomp off)")]
    Seccomp(String),
}

/// glibc opens and reads `/proc/sys/vm/overcommit_memory` the first time any thread's malloc
/// heap (not the main arena) shrinks, and keeps the answer for the process. No filtered role may
/// open files, and this thread and the device workers it starts have heaps of their own, so
/// make that first time happen here, before the filter: fill a heap with blocks below the mmap
/// threshold, then free them all so it shrinks.
fn prime_heap_shrink() {
    let blocks: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 32 << 10]).collect();
    drop(std::hint::black_box(blocks));
}

/// Makes every device worker thread add the device-worker filter before it touches guest data
/// (on top of the VMM filter it inherits from this thread, so it ends up with the narrower
/// set). The hook is process-wide and set once: the first VM's level applies to later VMs of the
/// same process too, which is why `--seccomp` is a process setting in practice.
fn install_worker_filter_hook(level: SeccompLevel) {
    veil_devices::virtio::worker::set_thread_hook(Arc::new(move |_name: &str| {
        seccomp::install(Role::DeviceWorker, level).map_err(std::io::Error::other)
    }));
}

impl DeviceService {
    /// Starts the thread, filtered with the VMM role at `level`.
    pub(crate) fn start(level: SeccompLevel) -> Result<(Arc<Self>, JoinHandle<()>), ServiceError> {
        install_worker_filter_hook(level);
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("veil-devices".into())
            .spawn(move || {
                prime_heap_shrink();
                let filtered = seccomp::install(Role::Vmm, level).map_err(|e| e.to_string());
                let ok = filtered.is_ok();
                let _ = ready_tx.send(filtered);
                if !ok {
                    return;
                }
                let mut kept = Kept::new();
                while let Ok(job) = rx.recv() {
                    job(&mut kept);
                }
                // Every handle is gone: the VM has ended. The devices go with `kept`.
                drop(kept);
            })
            .map_err(ServiceError::Spawn)?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok((Arc::new(Self { jobs: Some(jobs) }), thread)),
            Ok(Err(e)) => Err(ServiceError::Seccomp(e)),
            Err(_) => Err(ServiceError::Seccomp("the thread ended early".into())),
        }
    }

    /// No thread: jobs run on the caller's thread (for a VM without virtio devices).
    pub(crate) fn in_place() -> Arc<Self> {
        Arc::new(Self { jobs: None })
    }

    /// Runs `job` on the service thread and waits until it is done.
    pub(crate) fn run(&self, job: impl FnOnce() + Send + 'static) {
        let Some(jobs) = &self.jobs else {
            job();
            return;
        };
        let (done_tx, done_rx) = mpsc::sync_channel::<()>(1);
        let sent = jobs.send(Box::new(move |_: &mut Kept| {
            job();
            let _ = done_tx.send(());
        }));
        if sent.is_err() || done_rx.recv().is_err() {
            log::error!("the device service thread is gone; a device register write was lost");
        }
    }

    /// Has the thread hold `thing` until it ends, so that it is dropped there.
    pub(crate) fn keep(&self, thing: Box<dyn Send>) {
        let Some(jobs) = &self.jobs else {
            return;
        };
        if jobs
            .send(Box::new(move |kept: &mut Kept| kept.push(thing)))
            .is_err()
        {
            log::error!("the device service thread is gone");
        }
    }
}

/// The device service thread as the VM handle sees it.
#[derive(Debug, Default)]
pub struct DeviceThreads {
    service: Mutex<Option<Arc<DeviceService>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl DeviceThreads {
    /// Holds one handle on the service and its thread.
    pub(crate) fn new(service: Arc<DeviceService>, thread: JoinHandle<()>) -> Self {
        Self {
            service: Mutex::new(Some(service)),
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Once the vCPU threads (and with them the buses) are gone: lets the service thread drop the
    /// devices (stopping their workers) and waits for it.
    pub fn shutdown(&self) {
        drop(
            self.service
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            if t.join().is_err() {
                log::error!("the device service thread panicked while stopping the devices");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn jobs_run_on_the_service_thread_in_order() {
        let (s, thread) = DeviceService::start(SeccompLevel::Off).unwrap();
        let threads = DeviceThreads::new(s.clone(), thread);
        struct Flag(Arc<Mutex<bool>>);
        impl Drop for Flag {
            fn drop(&mut self) {
                let on_service = std::thread::current().name() == Some("veil-devices");
                *self.0.lock().unwrap() = on_service;
            }
        }
        let dropped_there = Arc::new(Mutex::new(false));
        s.keep(Box::new(Flag(dropped_there.clone())));
        let seen = Arc::new(Mutex::new(Vec::new()));
        for i in 0..3 {
            let seen = seen.clone();
            s.run(move || {
                let name = std::thread::current().name().map(str::to_owned);
                seen.lock().unwrap().push((i, name));
            });
        }
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        for (i, (n, name)) in seen.iter().enumerate() {
            assert_eq!((*n, name.as_deref()), (i, Some("veil-devices")));
        }
        drop(s);
        threads.shutdown();
        assert!(
            *dropped_there.lock().unwrap(),
            "kept things drop on the service thread"
        );
    }
}

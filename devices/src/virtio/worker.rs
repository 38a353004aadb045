//! One thread with its own `event-manager` loop per device (or queue), so a slow disk never stalls
//! the network. The loop serves one subscriber (the device's event handler) plus a kill eventfd
//! that stops it on reset.

use std::io;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use log::error;

use super::device::ActivateError;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

/// Runs first on every device thread, with the thread's name: where the VMM installs the
/// thread's seccomp filter. An error stops the thread before it touches guest data.
pub type ThreadHook = Arc<dyn Fn(&str) -> io::Result<()> + Send + Sync>;

static THREAD_HOOK: OnceLock<ThreadHook> = OnceLock::new();

/// Sets the hook every device thread runs first; can be set once per process (later calls
/// return false and change nothing).
pub fn set_thread_hook(hook: ThreadHook) -> bool {
    THREAD_HOOK.set(hook).is_ok()
}

/// Event data the worker reserves for its kill eventfd; handlers must not use it.
pub const KILL_EVENT: u32 = u32::MAX;

struct Stoppable<S> {
    inner: S,
    kill: EventFd,
    stopped: bool,
}

impl<S: MutEventSubscriber> MutEventSubscriber for Stoppable<S> {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.data() == KILL_EVENT {
            let _ = self.kill.read();
            self.stopped = true;
            return;
        }
        self.inner.process(events, ops);
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data(&self.kill, KILL_EVENT, EventSet::IN)) {
            error!("registering the worker kill event: {e}");
        }
        self.inner.init(ops);
    }
}

/// A running worker thread serving one subscriber.
#[derive(Debug)]
pub struct Worker<S: Send + 'static> {
    kill: EventFd,
    handle: Option<JoinHandle<Option<S>>>,
}

/// Activates a single-worker device: refuses a second activation (`active`), builds the
/// subscriber with `build`, and starts it on a thread named `device`.
pub fn start_once<S>(
    active: bool,
    device: &'static str,
    build: impl FnOnce() -> Result<S, ActivateError>,
) -> Result<Worker<S>, ActivateError>
where
    S: MutEventSubscriber + Send + 'static,
{
    if active {
        return Err(ActivateError::AlreadyActive { device });
    }
    spawn(device.into(), build()?).map_err(|source| ActivateError::Worker { device, source })
}

/// Starts a thread named `name` that serves `subscriber` until [`Worker::stop`]. Returns once
/// the thread has run the thread hook (so the worker is filtered before the caller reports the
/// device active); a failing hook ends the thread and fails the call.
pub fn spawn<S>(name: String, subscriber: S) -> io::Result<Worker<S>>
where
    S: MutEventSubscriber + Send + 'static,
{
    let kill = EventFd::new(EFD_NONBLOCK)?;
    let thread_kill = kill.try_clone()?;
    let mut em: EventManager<Stoppable<S>> =
        EventManager::new().map_err(|e| io::Error::other(format!("event manager: {e}")))?;
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<io::Result<()>>(1);
    let thread_name = name.clone();
    let handle = std::thread::Builder::new().name(name).spawn(move || {
        let name = thread_name;
        let setup = match THREAD_HOOK.get() {
            Some(hook) => hook(&name),
            None => Ok(()),
        };
        let ok = setup.is_ok();
        let _ = ready_tx.send(setup);
        if !ok {
            return None;
        }
        let id = em.add_subscriber(Stoppable {
            inner: subscriber,
            kill: thread_kill,
            stopped: false,
        });
        loop {
            if let Err(e) = em.run() {
                error!("{name}: event loop: {e}");
                break;
            }
            match em.subscriber_mut(id) {
                Ok(s) if s.stopped => break,
                Ok(_) => {}
                Err(e) => {
                    error!("{name}: lost its subscriber: {e}");
                    return None;
                }
            }
        }
        em.remove_subscriber(id).ok().map(|s| s.inner)
    })?;
    let setup = ready_rx
        .recv()
        .unwrap_or_else(|_| Err(io::Error::other("the thread ended before its setup")));
    if let Err(e) = setup {
        let _ = handle.join();
        return Err(io::Error::new(
            e.kind(),
            format!("device thread setup (seccomp filter) failed: {e}"),
        ));
    }
    Ok(Worker {
        kill,
        handle: Some(handle),
    })
}

impl<S: Send + 'static> Worker<S> {
    /// Stops the thread and hands back its subscriber (None if the thread died).
    pub fn stop(mut self) -> Option<S> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Option<S> {
        let handle = self.handle.take()?;
        if let Err(e) = self.kill.write(1) {
            error!("stopping a device worker: {e}");
            return None;
        }
        handle.join().ok().flatten()
    }
}

impl<S: Send + 'static> Drop for Worker<S> {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counter {
        evt: EventFd,
        seen: Arc<AtomicUsize>,
    }

    impl MutEventSubscriber for Counter {
        fn process(&mut self, _events: Events, _ops: &mut EventOps) {
            let _ = self.evt.read();
            self.seen.fetch_add(1, Ordering::SeqCst);
        }
        fn init(&mut self, ops: &mut EventOps) {
            ops.add(Events::with_data(&self.evt, 0, EventSet::IN))
                .unwrap();
        }
    }

    #[test]
    fn serves_events_runs_the_hook_and_stops() {
        let names = Arc::new(Mutex::new(Vec::<String>::new()));
        let n = names.clone();
        // Other tests may have set it first; then this one is the one that runs.
        let ours = set_thread_hook(Arc::new(move |name: &str| {
            n.lock().unwrap().push(name.to_owned());
            Ok(())
        }));
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let w = spawn(
            "veil-test-worker".into(),
            Counter {
                evt: evt.try_clone().unwrap(),
                seen: seen.clone(),
            },
        )
        .unwrap();
        evt.write(1).unwrap();
        let start = std::time::Instant::now();
        while seen.load(Ordering::SeqCst) == 0 {
            assert!(start.elapsed().as_secs() < 10);
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let back = w.stop().expect("the subscriber comes back");
        assert_eq!(back.seen.load(Ordering::SeqCst), 1);
        if ours {
            assert!(
                names
                    .lock()
                    .unwrap()
                    .contains(&"veil-test-worker".to_owned())
            );
        }
    }
}

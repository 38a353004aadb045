//! One thread with its own `event-manager` loop per device (or queue), so a slow disk never stalls
//! the network. The loop serves one subscriber (the device's event handler) plus a kill eventfd
//! that stops it on reset.

use std::io;
use std::thread::JoinHandle;

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use log::error;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

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

/// Starts a thread named `name` that serves `subscriber` until [`Worker::stop`].
pub fn spawn<S>(name: String, subscriber: S) -> io::Result<Worker<S>>
where
    S: MutEventSubscriber + Send + 'static,
{
    let kill = EventFd::new(EFD_NONBLOCK)?;
    let thread_kill = kill.try_clone()?;
    let mut em: EventManager<Stoppable<S>> =
        EventManager::new().map_err(|e| io::Error::other(format!("event manager: {e}")))?;
    let handle = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
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

//! The device side of one virtqueue: pops chains (parsed as hostile input), completes them and
//! signals the guest once per batch, honouring EVENT_IDX in both directions.

use std::sync::Arc;

use log::{error, warn};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::chain::{Chain, ChainError, ChainRules, DESC_SIZE};
use super::device::{ActiveQueue, DeviceHealth};
use super::features::{EVENT_IDX, INDIRECT_DESC, bit};
use super::{GuestMem, VirtioInterrupt};

/// Avail ring flag: the driver does not want interrupts (ignored with EVENT_IDX).
const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// A ring-level failure: the queue cannot be used until the driver resets the device.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The ring itself (avail index, used ring, notification fields) was unusable.
    #[error("{device} queue {queue}: {source}")]
    Ring {
        /// Device name.
        device: &'static str,
        /// Queue index.
        queue: u16,
        /// What virtio-queue reported.
        #[source]
        source: virtio_queue::Error,
    },
    /// The queue was already marked broken.
    #[error("{device} queue {queue} is broken and waits for a device reset")]
    Broken {
        /// Device name.
        device: &'static str,
        /// Queue index.
        queue: u16,
    },
}

/// What [`DeviceQueue::pop`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Popped {
    /// No more chains are available.
    Empty,
    /// A valid chain was parsed into the caller's [`Chain`].
    Chain,
    /// The chain with this head was malformed; the caller completes it with length 0.
    Bad(u16, ChainError),
}

/// Logs the first few guest errors of a kind, then one in every 1024, so a hostile guest cannot
/// flood the host's log.
#[derive(Debug, Default)]
pub struct LogLimiter {
    count: u64,
}

impl LogLimiter {
    /// Whether this occurrence should be logged.
    pub fn allow(&mut self) -> bool {
        self.count += 1;
        self.count <= 16 || self.count % 1024 == 0
    }
}

/// One queue being served by a device.
#[derive(Debug)]
pub struct DeviceQueue {
    device: &'static str,
    index: u16,
    queue: Queue,
    event: EventFd,
    rules: ChainRules,
    broken: bool,
    bad_chains: LogLimiter,
}

fn ring_ranges(q: &Queue) -> [(u64, u64); 3] {
    let size = u64::from(q.size());
    let desc = q.desc_table();
    let avail = q.avail_ring();
    let used = q.used_ring();
    [
        (desc, desc.saturating_add(size * DESC_SIZE)),
        (avail, avail.saturating_add(6 + 2 * size)),
        (used, used.saturating_add(6 + 8 * size)),
    ]
}

impl DeviceQueue {
    /// Takes over an activated queue; `max_segments` bounds the buffers in one chain.
    pub fn new(
        device: &'static str,
        active: ActiveQueue,
        features: u64,
        max_segments: usize,
    ) -> Self {
        let mut queue = active.queue;
        queue.set_event_idx(features & bit(EVENT_IDX) != 0);
        let rules = ChainRules {
            indirect: features & bit(INDIRECT_DESC) != 0,
            max_segments,
            rings: ring_ranges(&queue),
        };
        Self {
            device,
            index: active.index,
            queue,
            event: active.event,
            rules,
            broken: false,
            bad_chains: LogLimiter::default(),
        }
    }

    /// The queue's index within its device.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// The ioeventfd the driver's notifications arrive on.
    pub fn event(&self) -> &EventFd {
        &self.event
    }

    /// Whether a ring error stopped this queue.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// The ring state (for tests and state inspection).
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Hands the queue back (on reset).
    pub fn into_active(self) -> ActiveQueue {
        ActiveQueue {
            index: self.index,
            queue: self.queue,
            event: self.event,
        }
    }

    fn ring_err(&self, source: virtio_queue::Error) -> QueueError {
        QueueError::Ring {
            device: self.device,
            queue: self.index,
            source,
        }
    }

    /// A broken queue is never touched again (until the driver resets the device).
    fn check(&self) -> Result<(), QueueError> {
        if self.broken {
            return Err(QueueError::Broken {
                device: self.device,
                queue: self.index,
            });
        }
        Ok(())
    }

    /// Pops the next available chain into `chain`.
    pub fn pop(&mut self, mem: &GuestMem, chain: &mut Chain) -> Result<Popped, QueueError> {
        self.check()?;
        let table = GuestAddress(self.queue.desc_table());
        let size = self.queue.size();
        let head = {
            let mut iter = self.queue.iter(&**mem).map_err(|e| QueueError::Ring {
                device: self.device,
                queue: self.index,
                source: e,
            })?;
            match iter.next() {
                Some(c) => c.head_index(),
                None => return Ok(Popped::Empty),
            }
        };
        match chain.parse(&**mem, table, size, head, &self.rules) {
            Ok(()) => Ok(Popped::Chain),
            Err(e) => {
                if self.bad_chains.allow() {
                    warn!(
                        "{} queue {}: guest sent a bad descriptor chain (head {head}): {e}",
                        self.device, self.index
                    );
                }
                Ok(Popped::Bad(head, e))
            }
        }
    }

    /// Whether the driver has published chains not popped yet: one read of the avail index,
    /// for a device that polls the ring instead of waiting for a notification.
    pub fn has_available(&self, mem: &GuestMem) -> Result<bool, QueueError> {
        self.check()?;
        let idx = self
            .queue
            .avail_idx(&**mem, std::sync::atomic::Ordering::Acquire)
            .map_err(|e| self.ring_err(e))?;
        Ok(idx.0 != self.queue.next_avail())
    }

    /// Gives back the chain popped last (a device that cannot use it yet, e.g. no input).
    pub fn unpop(&mut self) {
        self.queue.go_to_previous_position();
    }

    /// Puts the chain with head `head` in the used ring with `len` bytes written.
    pub fn complete(&mut self, mem: &GuestMem, head: u16, len: u32) -> Result<(), QueueError> {
        self.check()?;
        self.queue
            .add_used(&**mem, head, len)
            .map_err(|e| self.ring_err(e))
    }

    /// Re-enables driver notifications after a drain; true if more chains arrived meanwhile.
    pub fn enable_notification(&mut self, mem: &GuestMem) -> Result<bool, QueueError> {
        self.check()?;
        self.queue
            .enable_notification(&**mem)
            .map_err(|e| self.ring_err(e))
    }

    /// Suppresses driver notifications while the device drains the ring.
    pub fn disable_notification(&mut self, mem: &GuestMem) -> Result<(), QueueError> {
        self.check()?;
        self.queue
            .disable_notification(&**mem)
            .map_err(|e| self.ring_err(e))
    }

    /// Tells the driver not to notify until [`Self::enable_notification`], for a device that
    /// polls the ring meanwhile. Without EVENT_IDX that is NO_NOTIFY; with it, avail_event is
    /// set just behind the chains taken so far, a point the driver has passed already, so it
    /// does not notify for new chains (at worst once after 64Ki of them, when the index wraps).
    pub fn suppress_notifications(&mut self, mem: &GuestMem) -> Result<(), QueueError> {
        self.check()?;
        if !self.queue.event_idx_enabled() {
            return self.disable_notification(mem);
        }
        let at = self
            .queue
            .used_ring()
            .checked_add(4 + 8 * u64::from(self.queue.size()))
            .map(GuestAddress)
            .ok_or_else(|| self.ring_err(virtio_queue::Error::AddressOverflow))?;
        let behind = self.queue.next_avail().wrapping_sub(1);
        mem.write_obj(behind.to_le(), at)
            .map_err(|e| self.ring_err(virtio_queue::Error::GuestMemory(e)))
    }

    /// Interrupts the guest if the batch just completed needs it (EVENT_IDX or the driver's
    /// NO_INTERRUPT flag may say no). Returns whether it signalled.
    pub fn signal_used(
        &mut self,
        mem: &GuestMem,
        interrupt: &dyn VirtioInterrupt,
    ) -> Result<bool, QueueError> {
        self.check()?;
        let mut needed = self
            .queue
            .needs_notification(&**mem)
            .map_err(|e| self.ring_err(e))?;
        if needed && !self.queue.event_idx_enabled() {
            // virtio-queue leaves VRING_AVAIL_F_NO_INTERRUPT to the device.
            let flags: u16 = mem
                .read_obj(GuestAddress(self.queue.avail_ring()))
                .map_err(|e| self.ring_err(virtio_queue::Error::GuestMemory(e)))?;
            needed = u16::from_le(flags) & AVAIL_F_NO_INTERRUPT == 0;
        }
        if needed {
            if let Err(e) = interrupt.signal_queue(self.index) {
                error!("{} queue {}: {e}", self.device, self.index);
            }
        }
        Ok(needed)
    }

    /// Marks the queue broken after a ring error: logs what the guest did, sets
    /// DEVICE_NEEDS_RESET and tells the driver through a configuration interrupt.
    pub fn fail(
        &mut self,
        err: &QueueError,
        health: &DeviceHealth,
        interrupt: &dyn VirtioInterrupt,
    ) {
        if self.broken {
            return;
        }
        self.broken = true;
        error!("{err}; device needs reset");
        health.set_needs_reset();
        if let Err(e) = interrupt.signal_config() {
            error!("{} queue {}: {e}", self.device, self.index);
        }
    }

    /// Serves the queue until it is empty: pops each chain, lets `handle` process it (returning
    /// the bytes written to the guest), completes it, and signals the guest once per batch.
    /// Malformed chains are completed with length 0; ring errors break the queue.
    /// Returns the number of chains completed.
    pub fn drain<F>(
        &mut self,
        mem: &GuestMem,
        chain: &mut Chain,
        interrupt: &Arc<dyn VirtioInterrupt>,
        health: &DeviceHealth,
        mut handle: F,
    ) -> usize
    where
        F: FnMut(&Chain) -> u32,
    {
        if self.broken {
            return 0;
        }
        let mut done = 0;
        let result = (|| -> Result<(), QueueError> {
            loop {
                self.disable_notification(mem)?;
                loop {
                    let (head, len) = match self.pop(mem, chain)? {
                        Popped::Empty => break,
                        Popped::Chain => (chain.head(), handle(chain)),
                        Popped::Bad(head, _) => (head, 0),
                    };
                    self.complete(mem, head, len)?;
                    done += 1;
                }
                if !self.enable_notification(mem)? {
                    break;
                }
            }
            if done > 0 {
                self.signal_used(mem, interrupt.as_ref())?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            // Completed chains must still reach the guest before the queue stops.
            if done > 0 {
                let _ = interrupt.signal_queue(self.index);
            }
            self.fail(&e, health, interrupt.as_ref());
        }
        done
    }
}

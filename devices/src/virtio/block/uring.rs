//! The io_uring backend: requests of a batch are submitted with one system call, complete
//! asynchronously into the completion ring (which the worker reads right after submitting, when
//! it polls, and when the completion eventfd wakes it), and are answered (status byte, used
//! ring, one interrupt per batch) as their completions arrive. Data still moves straight between the
//! image and guest memory: each in-flight request keeps its iovecs in a slot until it completes.

use std::io;
use std::os::fd::AsRawFd;

use io_uring::{IoUring, opcode, types};
use log::{error, info};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::BlockMetrics;
use super::disk::Disk;
use super::request::{HEADER_LEN, Request, status};
use crate::virtio::chain::Chain;
use crate::virtio::iov::IoVecs;

/// One request in flight.
#[derive(Debug)]
struct Slot {
    head: u16,
    status_addr: u64,
    used_len: u32,
    expect: i64,
    req: Request,
    iov: IoVecs,
}

/// An io_uring instance serving one queue.
pub struct UringEngine {
    ring: IoUring,
    completion: EventFd,
    slots: Vec<Slot>,
    free: Vec<u16>,
    queued: usize,
}

impl std::fmt::Debug for UringEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringEngine")
            .field("in_flight", &(self.slots.len() - self.free.len()))
            .finish_non_exhaustive()
    }
}

/// Whether io_uring works here (checked once when a block device is created).
pub fn probe() -> io::Result<()> {
    let ring = IoUring::new(2)?;
    let nop = opcode::Nop::new().build().user_data(7);
    // SAFETY: a NOP references no memory.
    unsafe { ring_push(&ring, &nop)? };
    ring.submit_and_wait(1)?;
    Ok(())
}

/// # Safety
/// Every buffer `entry` references must stay valid until its completion is reaped.
unsafe fn ring_push(ring: &IoUring, entry: &io_uring::squeue::Entry) -> io::Result<()> {
    // SAFETY: IoUring::submission_shared is only unsafe because two submission queue handles
    // must not coexist; this is the only one, used on the worker thread. The caller upholds
    // the buffer lifetime contract of `push`.
    unsafe {
        ring.submission_shared()
            .push(entry)
            .map_err(|_| io::Error::other("io_uring submission queue full"))
    }
}

/// What a completion produced, for the worker to put in the used ring.
#[derive(Debug)]
pub struct Completed {
    /// Chain head.
    pub head: u16,
    /// Bytes written to the guest (data plus status byte).
    pub used_len: u32,
}

impl UringEngine {
    /// An engine with room for `depth` requests in flight.
    pub fn new(depth: u16) -> io::Result<Self> {
        let ring = IoUring::new(u32::from(depth.max(2)))?;
        let completion = EventFd::new(EFD_NONBLOCK)?;
        ring.submitter().register_eventfd(completion.as_raw_fd())?;
        let slots = (0..depth)
            .map(|_| Slot {
                head: 0,
                status_addr: 0,
                used_len: 0,
                expect: 0,
                req: Request::Flush,
                iov: IoVecs::with_capacity(super::MAX_SEGMENTS * 2),
            })
            .collect();
        Ok(Self {
            ring,
            completion,
            slots,
            free: (0..depth).rev().collect(),
            queued: 0,
        })
    }

    /// The eventfd that becomes readable when requests complete.
    pub fn completion_event(&self) -> &EventFd {
        &self.completion
    }

    /// Resets the completion eventfd (before reaping, so a completion after the reap wakes
    /// the worker again).
    pub fn clear_event(&self) {
        let _ = self.completion.read();
    }

    /// Whether finished requests wait to be reaped (a read of the shared ring, no system call).
    pub fn has_completions(&mut self) -> bool {
        !self.ring.completion().is_empty()
    }

    /// Whether another request can be started.
    pub fn has_room(&self) -> bool {
        !self.free.is_empty()
    }

    /// Starts `req` (parsed from `chain`); returns false if it must run synchronously instead.
    pub fn start(
        &mut self,
        mem: &vm_memory::GuestMemoryMmap<()>,
        disk: &Disk,
        chain: &Chain,
        req: Request,
    ) -> Result<bool, String> {
        let Some(&idx) = self.free.last() else {
            return Err("no free io_uring slot".into());
        };
        let Some(last) = chain.writable().last() else {
            return Err("no status byte".into());
        };
        let status_addr = last.addr.0 + u64::from(last.len) - 1;
        let slot = &mut self.slots[usize::from(idx)];
        slot.iov.clear();
        let fd = types::Fd(disk.file().as_raw_fd());
        let entry = match req {
            Request::In { offset, len } => {
                slot.iov
                    .push_range(mem, chain.writable(), 0, len)
                    .map_err(|e| e.to_string())?;
                slot.used_len = (len + 1) as u32;
                slot.expect = len as i64;
                let l = slot.iov.as_slice();
                opcode::Readv::new(fd, l.as_ptr(), l.len() as u32)
                    .offset(offset)
                    .build()
            }
            Request::Out { offset, len } => {
                slot.iov
                    .push_range(mem, chain.readable(), HEADER_LEN, len)
                    .map_err(|e| e.to_string())?;
                slot.used_len = 1;
                slot.expect = len as i64;
                let l = slot.iov.as_slice();
                opcode::Writev::new(fd, l.as_ptr(), l.len() as u32)
                    .offset(offset)
                    .build()
            }
            Request::Flush => {
                slot.used_len = 1;
                slot.expect = 0;
                opcode::Fsync::new(fd)
                    .flags(types::FsyncFlags::DATASYNC)
                    .build()
            }
            Request::Discard { offset, len } => {
                slot.used_len = 1;
                slot.expect = 0;
                opcode::Fallocate::new(fd, len)
                    .offset(offset)
                    .mode(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
                    .build()
            }
            // Write-zeroes has fallbacks and GET_ID touches no file: both run synchronously.
            Request::WriteZeroes { .. } | Request::GetId => return Ok(false),
        };
        slot.head = chain.head();
        slot.status_addr = status_addr;
        slot.req = req;
        // SAFETY: the iovecs live in `self.slots`, which is never resized and is not dropped
        // before every request completed (see Drop); they point into guest memory that the
        // worker keeps mapped for its whole life.
        unsafe { ring_push(&self.ring, &entry.user_data(u64::from(idx))) }
            .map_err(|e| e.to_string())?;
        self.free.pop();
        self.queued += 1;
        Ok(true)
    }

    /// Submits everything started since the last call: one system call per batch.
    pub fn submit(&mut self) {
        if self.queued == 0 {
            return;
        }
        match self.ring.submit() {
            Ok(_) => self.queued = 0,
            Err(e) => error!("virtio-blk: io_uring submit: {e}"),
        }
    }

    /// Collects finished requests: writes their status bytes and hands them to `done`.
    pub fn reap(
        &mut self,
        mem: &vm_memory::GuestMemoryMmap<()>,
        disk: &Disk,
        metrics: &BlockMetrics,
        mut done: impl FnMut(Completed),
    ) {
        let cq = self.ring.completion();
        for cqe in cq {
            let idx = cqe.user_data() as usize;
            let Some(slot) = self.slots.get_mut(idx) else {
                continue;
            };
            let res = i64::from(cqe.result());
            let mut st = if res < 0 || (slot.expect > 0 && res != slot.expect) {
                error!(
                    "virtio-blk: {:?} failed: {}",
                    slot.req,
                    if res < 0 {
                        io::Error::from_raw_os_error(-res as i32).to_string()
                    } else {
                        format!("short transfer of {res} bytes")
                    }
                );
                status::IOERR
            } else {
                status::OK
            };
            let mut used = slot.used_len;
            if st == status::IOERR {
                BlockMetrics::add(&metrics.errors, 1);
                used = 1;
            } else {
                match slot.req {
                    Request::In { len, .. } => {
                        BlockMetrics::add(&metrics.reads, 1);
                        BlockMetrics::add(&metrics.read_bytes, len);
                    }
                    Request::Out { len, .. } => {
                        BlockMetrics::add(&metrics.writes, 1);
                        BlockMetrics::add(&metrics.write_bytes, len);
                    }
                    Request::Flush => BlockMetrics::add(&metrics.flushes, 1),
                    _ => BlockMetrics::add(&metrics.discards, 1),
                }
            }
            // A file system without hole punching: fall back like the synchronous path.
            if res == -i64::from(libc::EOPNOTSUPP) {
                if let Request::Discard { offset, len } = slot.req {
                    st = match disk.write_zeroes(offset, len, true) {
                        Ok(()) => status::OK,
                        Err(_) => status::IOERR,
                    };
                }
            }
            slot.iov.clear();
            let _ = mem.write_obj(st, GuestAddress(slot.status_addr));
            done(Completed {
                head: slot.head,
                used_len: used,
            });
            self.free.push(idx as u16);
        }
    }
}

impl Drop for UringEngine {
    fn drop(&mut self) {
        // The kernel may still be using iovecs and guest memory: wait for every request.
        self.submit();
        let mut in_flight = self.slots.len() - self.free.len();
        while in_flight > 0 {
            if self.ring.submit_and_wait(1).is_err() {
                break;
            }
            while self.ring.completion().next().is_some() {
                in_flight -= 1;
            }
        }
    }
}

/// Logs which backend a device uses.
pub fn log_choice(path: &std::path::Path, uring: Result<(), &io::Error>) {
    match uring {
        Ok(()) => info!("virtio-blk: {}: io_uring backend", path.display()),
        Err(e) => info!(
            "virtio-blk: {}: io_uring unavailable ({e}); synchronous preadv/pwritev backend",
            path.display()
        ),
    }
}

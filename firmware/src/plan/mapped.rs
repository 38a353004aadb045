//! Read-only mappings of input files, with a guard for files that shrink while mapped.
//!
//! Mapping a file instead of reading it saves copying it and zero-filling a buffer first (on a
//! 64 MiB image, about as long as hashing a third of it). The risk: if another process
//! truncates the file, touching a page past the new end raises SIGBUS, which would kill the
//! process with no word on why. So the first mapping installs a process-wide SIGBUS handler:
//! a fault inside a registered mapping prints `veil: error: <file> shrank while it was being
//! read ...` and ends the process with status 1 (recovering and returning an error is not
//! possible from a signal handler without `longjmp`, which Rust does not support); a SIGBUS
//! anywhere else goes to the disposition that was there before. (A disk read error under a
//! mapped page raises the same SIGBUS and gets the same message.) A file rewritten in place (not
//! shrunk) while mapped is read as a mix of old and new bytes, as `read()` racing a writer
//! would be.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Once, OnceLock};

/// How many mappings can be guarded at once; past that, files are read instead.
const SLOTS: usize = 64;

/// One guarded mapping: its address range and the message naming its file.
struct Slot {
    busy: AtomicBool,
    start: AtomicUsize,
    end: AtomicUsize,
    msg: AtomicPtr<u8>,
    msg_len: AtomicUsize,
}

impl Slot {
    const fn new() -> Self {
        Slot {
            busy: AtomicBool::new(false),
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            msg: AtomicPtr::new(std::ptr::null_mut()),
            msg_len: AtomicUsize::new(0),
        }
    }
}

static GUARDED: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
static INSTALL: Once = Once::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Writes all of `b` to stderr with the async-signal-safe `write(2)`.
fn write_stderr(mut b: &[u8]) {
    while !b.is_empty() {
        // SAFETY: `b` is a live byte slice; write(2) only reads it.
        let n = unsafe { libc::write(2, b.as_ptr().cast(), b.len()) };
        if n <= 0 {
            return;
        }
        b = &b[n as usize..];
    }
}

extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel hands an SA_SIGINFO handler a valid siginfo_t.
    let (addr, code) = unsafe { ((*info).si_addr() as usize, (*info).si_code) };
    if code > 0 {
        for s in &GUARDED {
            let start = s.start.load(Ordering::Acquire);
            if start != 0 && addr >= start && addr < s.end.load(Ordering::Acquire) {
                let (p, len) = (
                    s.msg.load(Ordering::Acquire),
                    s.msg_len.load(Ordering::Acquire),
                );
                write_stderr(b"veil: error: ");
                if !p.is_null() {
                    // SAFETY: `p..p+len` is the slot's leaked message, freed only after the
                    // slot's range is cleared, which happens when the mapping is dropped: no
                    // thread can be faulting on it then.
                    write_stderr(unsafe { std::slice::from_raw_parts(p, len) });
                }
                // SAFETY: _exit is async-signal-safe and ends the process at once.
                unsafe { libc::_exit(1) };
            }
        }
    }
    // Not a fault in a guarded mapping: restore what was there before. A fault repeats on
    // return and meets that disposition; a SIGBUS sent by another process is raised again.
    if let Some(old) = PREVIOUS.get() {
        // SAFETY: `old` is a sigaction the kernel returned; sigaction(2) is async-signal-safe.
        unsafe { libc::sigaction(libc::SIGBUS, old, std::ptr::null_mut()) };
    } else {
        // SAFETY: resetting to the default disposition is async-signal-safe.
        unsafe { libc::signal(libc::SIGBUS, libc::SIG_DFL) };
    }
    if code <= 0 {
        // SAFETY: raise(3) is async-signal-safe; SIGBUS stays blocked until the handler returns.
        unsafe { libc::raise(libc::SIGBUS) };
    }
}

/// Installs the SIGBUS guard once; false if the process refused it.
fn install_guard() -> bool {
    INSTALL.call_once(|| {
        // SAFETY: zeroed sigaction structs are valid; sigaction(2) reads `new` and writes `old`.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) != 0 {
                return;
            }
            let _ = PREVIOUS.set(old);
            let mut new: libc::sigaction = std::mem::zeroed();
            let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                on_sigbus;
            new.sa_sigaction = handler as usize;
            new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut new.sa_mask);
            if libc::sigaction(libc::SIGBUS, &new, std::ptr::null_mut()) == 0 {
                INSTALLED.store(true, Ordering::Release);
            }
        }
    });
    INSTALLED.load(Ordering::Acquire)
}

/// A read-only, guarded mapping of a whole file.
pub(super) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    slot: usize,
}

// SAFETY: the mapping is read-only and owned by this value until it is dropped; sharing
// `&[u8]` views of it across threads is as safe as sharing any immutable buffer.
unsafe impl Send for Mapping {}
// SAFETY: as above; nothing mutates the mapping through this type.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `file` (named `path` in the SIGBUS message). `Ok(None)` when the
    /// file cannot or should not be mapped (empty, the guard is unavailable or full, or mmap
    /// refuses it): the caller reads it instead.
    pub(super) fn map(
        file: &std::fs::File,
        len: u64,
        path: &Path,
    ) -> std::io::Result<Option<Self>> {
        let Ok(len) = usize::try_from(len) else {
            return Ok(None);
        };
        if len == 0 || !install_guard() {
            return Ok(None);
        }
        let Some(slot) = GUARDED.iter().position(|s| {
            s.busy
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        }) else {
            return Ok(None);
        };
        // SAFETY: a fresh read-only private mapping of an open file; the kernel picks the
        // address. MAP_POPULATE maps the cached pages now (one call instead of a fault per
        // 64 KiB later).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_POPULATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            GUARDED[slot].busy.store(false, Ordering::Release);
            return Ok(None);
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).expect("mmap succeeded, so it is not null");
        let msg = format!(
            "{} shrank while it was being read, or a read error hit it (SIGBUS on its \
             mapping): was it truncated during the run?\n",
            path.display()
        )
        .into_bytes()
        .into_boxed_slice();
        let s = &GUARDED[slot];
        s.msg_len.store(msg.len(), Ordering::Release);
        s.msg
            .store(Box::into_raw(msg).cast::<u8>(), Ordering::Release);
        s.end.store(ptr.as_ptr() as usize + len, Ordering::Release);
        s.start.store(ptr.as_ptr() as usize, Ordering::Release);
        Ok(Some(Mapping { ptr, len, slot }))
    }

    /// The mapped bytes.
    pub(super) fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` stays mapped and readable until `self` is dropped, and nothing
        // writes through it. If the file shrinks, the SIGBUS guard ends the process before a
        // read past the new end could return; if it is rewritten in place, bytes read as old
        // or new values (any value is a valid u8).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let s = &GUARDED[self.slot];
        s.start.store(0, Ordering::Release);
        s.end.store(0, Ordering::Release);
        let p = s.msg.swap(std::ptr::null_mut(), Ordering::AcqRel);
        let len = s.msg_len.swap(0, Ordering::AcqRel);
        if !p.is_null() {
            // SAFETY: `p` and `len` came from `Box::into_raw` of a boxed slice in `map`, and
            // the swap above made this the only owner.
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, len)) });
        }
        // SAFETY: the range was mapped by `map` and no borrow of it outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        s.busy.store(false, Ordering::Release);
    }
}

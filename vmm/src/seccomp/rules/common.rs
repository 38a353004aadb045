//! What every Veil thread needs, whatever its role: the Rust standard library and glibc at run
//! time (allocation, locks, signals, thread exit) and the logger.

use super::{Rules, arg_eq, arg_masked, sys};

/// Rules shared by every role.
pub(crate) fn rules() -> Rules {
    let mut r = Rules::default();
    r.allow(&[
        // Mutex, Condvar, Once, thread join and park: all futexes.
        sys!(SYS_futex),
        // The logger and panic messages go to stderr; vCPUs write the serial console.
        sys!(SYS_write),
        // Dropping file descriptors (vCPU and eventfds, connections, the serial file).
        sys!(SYS_close),
        // The allocator (glibc malloc): the main arena grows with brk, thread arenas and large
        // blocks with mmap/munmap/mremap; free returns memory with madvise(MADV_DONTNEED), and
        // glibc releases an exiting thread's stack the same way.
        sys!(SYS_brk),
        sys!(SYS_munmap),
        sys!(SYS_mremap),
        sys!(SYS_madvise),
        // std asks for the thread's id (thread start, stack-overflow detection).
        sys!(SYS_gettid),
        // Instant::now and SystemTime::now when the vDSO falls back to the syscall.
        sys!(SYS_clock_gettime),
        // Signals: return from the vCPU kick handler; glibc masks signals around thread
        // creation, exit and pthread_kill; Rust removes a thread's alternate signal stack (its
        // stack overflow guard) when the thread ends.
        sys!(SYS_rt_sigreturn),
        sys!(SYS_rt_sigprocmask),
        sys!(SYS_sigaltstack),
        // A syscall interrupted by the kick signal is restarted through this one.
        sys!(SYS_restart_syscall),
        // A thread ending; the process ending (std::process::exit, abort after a double panic).
        sys!(SYS_exit),
        sys!(SYS_exit_group),
    ]);
    // Memory is never made executable: no thread of Veil generates code.
    let no_exec = || vec![arg_masked(2, libc::PROT_EXEC as u64, 0)];
    r.allow_if(sys!(SYS_mmap), no_exec());
    r.allow_if(sys!(SYS_mprotect), no_exec());
    // std checks that a descriptor is still open before closing it (debug assertions).
    r.allow_if(sys!(SYS_fcntl), vec![arg_eq(1, libc::F_GETFD as u64)]);
    r
}

//! The VMM thread: the thread that called `launch` (the `veil` binary's main thread). It waits
//! for the guest's end, stops the vCPUs (kicking them out of `KVM_RUN` with a signal), flushes
//! the serial console and exits; it is also the thread that activates devices and starts their
//! worker threads.
//!
//! Filters stack: a worker thread starts with its creator's filter and adds the device-worker
//! filter, so this role allows everything the device-worker role allows, plus what activation
//! and thread creation need.

use super::{Rules, arg_eq, arg_masked, common, ioctl, sys, worker};

/// Rules of the VMM thread.
pub(crate) fn rules() -> Rules {
    let mut r = common::rules();
    r.allow(&[
        // Stopping vCPUs: pthread_kill is tgkill(getpid(), tid, SIGRTMIN); between kicks the
        // thread sleeps for a few microseconds.
        sys!(SYS_getpid),
        sys!(SYS_tgkill),
        sys!(SYS_nanosleep),
        sys!(SYS_clock_nanosleep),
        // Device activation: the queue eventfds' epoll set, io_uring rings and their completion
        // eventfd, duplicated descriptors (try_clone).
        sys!(SYS_eventfd2),
        sys!(SYS_epoll_create1),
        sys!(SYS_io_uring_setup),
        sys!(SYS_io_uring_register),
        // Starting a worker thread: glibc's pthread_create tries clone3 first (its flags live in
        // memory, where seccomp cannot see them; a child process could not escape its filters
        // anyway, and execve is never allowed). The new thread registers its robust futex list
        // and rseq area, reads its stack bounds (glibc's pthread_getattr_np asks for the CPU
        // affinity too), names itself and installs its own filter.
        sys!(SYS_clone3),
        sys!(SYS_set_robust_list),
        sys!(SYS_rseq),
        sys!(SYS_sched_getaffinity),
        // Dropping the devices when the VM ends: the vsock device removes its host socket.
        sys!(SYS_unlink),
    ]);
    r.allow_if(
        sys!(SYS_seccomp),
        vec![arg_eq(0, u64::from(libc::SECCOMP_SET_MODE_FILTER))],
    );
    // The clone fallback: threads only (CLONE_THREAD set), never a new process.
    r.allow_if(
        sys!(SYS_clone),
        vec![arg_masked(
            0,
            libc::CLONE_THREAD as u64,
            libc::CLONE_THREAD as u64,
        )],
    );
    // prctl: naming a thread (PR_SET_NAME) and the no_new_privs bit a filter needs.
    r.allow_if(sys!(SYS_prctl), vec![arg_eq(0, libc::PR_SET_NAME as u64)]);
    r.allow_if(
        sys!(SYS_prctl),
        vec![arg_eq(0, libc::PR_SET_NO_NEW_PRIVS as u64)],
    );
    // fcntl: F_DUPFD_CLOEXEC (try_clone), F_GETFL/F_SETFL (non-blocking console input).
    for cmd in [libc::F_DUPFD_CLOEXEC, libc::F_GETFL, libc::F_SETFL] {
        r.allow_if(sys!(SYS_fcntl), vec![arg_eq(1, cmd as u64)]);
    }
    r.ioctls(&[
        // Binding queue notifications and device interrupts to eventfds in KVM.
        ioctl::ioeventfd(),
        ioctl::irqfd(),
        // The IOAPIC's routes when devices' interrupt lines change.
        ioctl::set_gsi_routing(),
        // virtio-net: the tap's offloads once the guest accepted its features.
        ioctl::tun_offload(),
    ]);
    r.extend(&worker::rules());
    r
}

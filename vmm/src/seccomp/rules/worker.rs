//! Device worker threads (veil-devices `virtio::worker`): one event loop per virtio device or
//! queue, moving data between guest memory and the backend (disk image, tap, Unix sockets,
//! the console, the kernel's random pool) and signalling the guest.
//!
//! Not here: what happens when a device is activated (creating the io_uring, eventfds and the
//! epoll set, TUNSETOFFLOAD, spawning the worker). That runs on the thread that activates the
//! device, which must be the VMM thread (see `vmm.rs`).

use super::{Rules, arg_eq, arg_null, common, ioctl, sys};

/// Rules of a device worker thread.
pub(crate) fn rules() -> Rules {
    let mut r = common::rules();
    r.allow(&[
        // The event loop (event-manager over epoll); vsock adds and removes connections.
        sys!(SYS_epoll_wait),
        sys!(SYS_epoll_pwait),
        sys!(SYS_epoll_ctl),
        // eventfds (queue notifications, the kill event, io_uring completions, irqfds), the tap,
        // the console and Unix-socket streams: plain and vectored reads and writes.
        sys!(SYS_read),
        sys!(SYS_readv),
        sys!(SYS_writev),
        // virtio-blk, synchronous backend: data at offsets, flush, discard and write-zeroes.
        sys!(SYS_pread64),
        sys!(SYS_preadv),
        sys!(SYS_pwrite64),
        sys!(SYS_pwritev),
        sys!(SYS_fdatasync),
        sys!(SYS_fallocate),
        // virtio-blk, io_uring backend: submitting a batch (the ring exists already).
        sys!(SYS_io_uring_enter),
        // virtio-rng: bytes from the kernel's pool.
        sys!(SYS_getrandom),
        // virtio-vsock: host-initiated connections arrive on the listener, guest-initiated ones
        // connect to `<uds>_<port>`; half-close on the guest's SHUTDOWN.
        sys!(SYS_accept4),
        sys!(SYS_connect),
        sys!(SYS_shutdown),
    ]);
    // std reads and writes Unix streams with recv and send(MSG_NOSIGNAL): recvfrom and sendto
    // on the connected socket, never with an address.
    r.allow_if(sys!(SYS_recvfrom), vec![arg_null(4)]);
    r.allow_if(sys!(SYS_sendto), vec![arg_null(4)]);
    // virtio-vsock's host side is Unix sockets only: no other socket family.
    r.allow_if(sys!(SYS_socket), vec![arg_eq(0, libc::AF_UNIX as u64)]);
    r.ioctls(&[
        // std's set_nonblocking on a freshly connected vsock stream.
        ioctl::fionbio(),
        // Interrupts through the IOAPIC or a direct MSI (virtio-mmio legacy lines, MSI-X
        // without irqfd).
        ioctl::signal_msi(),
    ]);
    r
}

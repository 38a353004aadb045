//! The VMM and device-worker roles doing real device work under `--seccomp on` filters, the way
//! veil-devices does it: the VMM thread activates a device (eventfds, an epoll set, an io_uring
//! with its rings and completion eventfd, duplicated descriptors) and starts a worker thread,
//! which adds its own filter on top and serves a disk image, an eventfd loop, the random pool
//! and Unix-socket streams. Filters are per thread, so these run in threads of this test
//! process; a filter that missed something would kill the process (SIGSYS) and fail the test.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};

use veil_tests::temp_dir;
use veil_vmm::SeccompLevel;
use veil_vmm::seccomp::{Filters, Role};

/// A syscall's result as io::Result (for raw syscalls returning -1 and errno).
fn check(r: libc::c_long, what: &str) -> std::io::Result<libc::c_long> {
    if r < 0 {
        Err(std::io::Error::other(format!(
            "{what}: {}",
            std::io::Error::last_os_error()
        )))
    } else {
        Ok(r)
    }
}

/// What activating a block device does on the VMM thread: an io_uring of 8 entries with its
/// submission ring mapped and a completion eventfd registered; returns (ring, eventfd).
fn activate_block() -> std::io::Result<(OwnedFd, OwnedFd)> {
    // struct io_uring_params: 120 bytes, all zero in, offsets out.
    let mut params = [0u32; 30];
    // SAFETY: io_uring_setup writes the 120-byte params struct we pass.
    let ring = check(
        unsafe { libc::syscall(libc::SYS_io_uring_setup, 8, params.as_mut_ptr()) },
        "io_uring_setup",
    )?;
    // SAFETY: io_uring_setup returned a new descriptor we now own.
    let ring = unsafe { OwnedFd::from_raw_fd(ring as i32) };
    // SAFETY: maps the submission ring (offset IORING_OFF_SQ_RING = 0) read-write, shared.
    let sq = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            ring.as_raw_fd(),
            0,
        )
    };
    if sq == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: creating an eventfd takes plain integers.
    let efd = check(
        libc::c_long::from(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) }),
        "eventfd",
    )?;
    // SAFETY: eventfd returned a new descriptor we now own.
    let efd = unsafe { OwnedFd::from_raw_fd(efd as i32) };
    let raw = efd.as_raw_fd();
    // SAFETY: IORING_REGISTER_EVENTFD (4) reads one int.
    let r = unsafe { libc::syscall(libc::SYS_io_uring_register, ring.as_raw_fd(), 4, &raw, 1) };
    check(r, "io_uring_register")?;
    // SAFETY: unmapping the ring mapped above (the kernel keeps the ring alive with the fd).
    unsafe { libc::munmap(sq, 4096) };
    Ok((ring, efd))
}

/// What a device worker does with its backends; returns a description of the first failure.
fn serve(
    disk: std::fs::File,
    ring: OwnedFd,
    notify: OwnedFd,
    listener: UnixListener,
    guest_port: std::path::PathBuf,
) -> Result<(), String> {
    let e = |what: &str| {
        let what = what.to_string();
        move |err: std::io::Error| format!("{what}: {err}")
    };
    // virtio-blk, synchronous backend.
    disk.write_all_at(b"sector", 512).map_err(e("pwrite"))?;
    let mut back = [0u8; 6];
    disk.read_exact_at(&mut back, 512).map_err(e("pread"))?;
    if &back != b"sector" {
        return Err("read back the wrong bytes".into());
    }
    let iov = [libc::iovec {
        iov_base: back.as_mut_ptr().cast(),
        iov_len: back.len(),
    }];
    // SAFETY: one iovec over `back`, writable for its length.
    let r = unsafe { libc::syscall(libc::SYS_preadv, disk.as_raw_fd(), iov.as_ptr(), 1, 512, 0) };
    check(r, "preadv").map_err(|x| x.to_string())?;
    disk.sync_data().map_err(e("fdatasync"))?;
    // SAFETY: punching a hole in our own file.
    let punched = unsafe {
        libc::fallocate(
            disk.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            4096,
        )
    };
    check(libc::c_long::from(punched), "fallocate").map_err(|x| x.to_string())?;
    // virtio-blk, io_uring backend: enter the ring (nothing to submit).
    let fd = ring.as_raw_fd();
    // SAFETY: io_uring_enter on our ring with no submissions and no arguments.
    let r = unsafe { libc::syscall(libc::SYS_io_uring_enter, fd, 0, 0, 0, 0usize, 0usize) };
    check(r, "io_uring_enter").map_err(|x| x.to_string())?;
    // The event loop: a queue eventfd (made by the activating thread).
    let kick: u64 = 1;
    // SAFETY: writes 8 bytes from `kick`.
    unsafe { libc::write(notify.as_raw_fd(), (&raw const kick).cast(), 8) };
    let mut got: u64 = 0;
    // SAFETY: reads 8 bytes into `got`.
    let n = unsafe { libc::read(notify.as_raw_fd(), (&raw mut got).cast(), 8) };
    if n != 8 || got != 1 {
        return Err(format!("eventfd read {n} bytes, value {got}"));
    }
    // virtio-rng.
    let mut random = [0u8; 32];
    // SAFETY: fills `random`.
    let n = unsafe { libc::getrandom(random.as_mut_ptr().cast(), random.len(), 0) };
    if n != 32 {
        return Err(format!("getrandom gave {n} bytes"));
    }
    // virtio-vsock: a guest-initiated connection to the host's `<uds>_<port>` socket ...
    let mut out = UnixStream::connect(&guest_port).map_err(e("connect"))?;
    out.set_nonblocking(true).map_err(e("FIONBIO"))?;
    out.write_all(b"hello").map_err(e("write"))?;
    out.shutdown(std::net::Shutdown::Write)
        .map_err(e("shutdown"))?;
    // ... and a host-initiated one on the listener.
    let (mut conn, _) = listener.accept().map_err(e("accept"))?;
    let mut line = String::new();
    conn.read_to_string(&mut line).map_err(e("recv"))?;
    if line != "CONNECT 52\n" {
        return Err(format!("read {line:?}"));
    }
    Ok(())
}

/// A queue eventfd, as the activating thread makes them (workers create none).
fn queue_eventfd() -> std::io::Result<OwnedFd> {
    // SAFETY: creating an eventfd takes plain integers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[test]
fn vmm_thread_activates_devices_and_workers_serve_them_under_the_filters() {
    let dir = temp_dir("seccomp-devices");
    let disk_path = dir.join("disk.img");
    let disk = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&disk_path)
        .unwrap();
    disk.set_len(1 << 20).unwrap();
    let listener = UnixListener::bind(dir.join("vsock.sock")).unwrap();
    let guest_port = dir.join("vsock.sock_52");
    let host_app = UnixListener::bind(&guest_port).unwrap();
    let host = std::thread::spawn(move || {
        // The host side: accepts the guest's connection, and connects to the device.
        let (mut s, _) = host_app.accept().unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        got
    });
    let connect_to = dir.join("vsock.sock");
    let client = std::thread::spawn(move || {
        let mut s = UnixStream::connect(connect_to).unwrap();
        s.write_all(b"CONNECT 52\n").unwrap();
    });

    let filters = Filters::new(SeccompLevel::On).unwrap();
    let vmm = std::thread::Builder::new()
        .name("vmm-under-test".into())
        .spawn(move || -> Result<(), String> {
            filters.install(Role::Vmm).map_err(|e| e.to_string())?;
            let (ring, _completion) = activate_block().map_err(|e| e.to_string())?;
            // SAFETY: epoll_create1 takes a flag.
            let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            if epoll < 0 {
                return Err(format!(
                    "epoll_create1: {}",
                    std::io::Error::last_os_error()
                ));
            }
            let notify = queue_eventfd().map_err(|e| format!("eventfd: {e}"))?;
            let disk = disk.try_clone().map_err(|e| format!("dup: {e}"))?;
            let worker_filters = filters.clone();
            let worker = std::thread::Builder::new()
                .name("worker-under-test".into())
                .spawn(move || {
                    worker_filters
                        .install(Role::DeviceWorker)
                        .map_err(|e| e.to_string())?;
                    serve(disk, ring, notify, listener, guest_port)
                })
                .map_err(|e| format!("spawning the worker: {e}"))?;
            let served = worker
                .join()
                .map_err(|_| "the worker panicked".to_string())?;
            // SAFETY: closing the epoll descriptor made above.
            unsafe { libc::close(epoll) };
            served
        })
        .unwrap();
    assert_eq!(vmm.join().unwrap(), Ok(()));
    client.join().unwrap();
    assert_eq!(host.join().unwrap(), "hello");
}

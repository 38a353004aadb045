//! Veil's real seccomp filters, installed in a forked child process: a syscall the role does not
//! need kills the child with SIGSYS, the syscalls the role needs run (the kernel may still return
//! an error such as EBADF: what matters is that the filter let the call through), and at the
//! `log` level a forbidden syscall is let through too.

use veil_vmm::SeccompLevel;
use veil_vmm::seccomp::{Filters, Role};

/// How the child ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Exited(i32),
    Signal(i32),
}

/// Forks; the child installs `role`'s filter at `level`, runs `body` and exits with its status.
/// The filters are compiled before the fork, so the child only makes raw syscalls.
fn in_filtered_child(level: SeccompLevel, role: Role, body: fn() -> i32) -> Ended {
    let filters = Filters::new(level).expect("the filters compile");
    // SAFETY: the child only calls async-signal-safe functions (setrlimit, prctl, seccomp, raw
    // syscalls) and leaves with _exit; the parent only waits for it.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: setrlimit reads the struct we pass; no core file for the expected SIGSYS.
        unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
        let code = match filters.install(role) {
            Ok(()) => body(),
            Err(_) => 100,
        };
        // SAFETY: leaving the forked child without running the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child; `status` is a valid int to write.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid, "waitpid");
    if libc::WIFSIGNALED(status) {
        Ended::Signal(libc::WTERMSIG(status))
    } else {
        Ended::Exited(libc::WEXITSTATUS(status))
    }
}

fn killed(role: Role, body: fn() -> i32) {
    assert_eq!(
        in_filtered_child(SeccompLevel::On, role, body),
        Ended::Signal(libc::SIGSYS),
        "{} let a forbidden syscall through",
        role.name()
    );
}

fn allowed(role: Role, body: fn() -> i32) {
    assert_eq!(
        in_filtered_child(SeccompLevel::On, role, body),
        Ended::Exited(0),
        "{} stopped a syscall it needs (or the call failed)",
        role.name()
    );
}

/// A fork-like clone (no CLONE_THREAD), for a filter that must kill it; should the filter wrongly
/// let it through, the new process leaves at once and the caller returns 2.
fn fork_like_clone() -> i32 {
    // SAFETY: a raw clone without CLONE_VM: the new process has its own copy of memory and only
    // calls _exit.
    let r = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) };
    if r == 0 {
        // SAFETY: leaving the unexpected grandchild.
        unsafe { libc::_exit(3) };
    }
    2
}

/// `errno` of the last failed call.
fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// 0 when the raw syscall returned `want` or failed with errno `want_errno`; else 1.
fn expect(r: libc::c_long, want_errno: i32) -> i32 {
    if r >= 0 || errno() == want_errno {
        0
    } else {
        1
    }
}

const KVM_RUN: u64 = 0xae80;
const KVM_CREATE_VM: u64 = 0xae01;
const KVM_SET_USER_MEMORY_REGION: u64 = 0x4020_ae46;
const KVM_SIGNAL_MSI: u64 = 0x4020_aea5;
const KVM_IOEVENTFD: u64 = 0x4040_ae79;
const TUNSETIFF: u64 = 0x4004_54ca;
const TUNSETOFFLOAD: u64 = 0x4004_54d0;
const BAD_FD: libc::c_long = 1 << 20;

fn execve() -> i32 {
    let path = c"/bin/true";
    let argv = [path.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    // SAFETY: valid NUL-terminated path and NULL-terminated argv/envp.
    unsafe {
        libc::syscall(
            libc::SYS_execve,
            path.as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
        )
    };
    2
}

fn openat() -> i32 {
    // SAFETY: a valid NUL-terminated path.
    unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            c"/etc/hostname".as_ptr(),
            libc::O_RDONLY,
        )
    };
    2
}

fn ioctl(request: u64) -> libc::c_long {
    // SAFETY: an ioctl on a descriptor that is not open: the kernel returns EBADF.
    unsafe { libc::syscall(libc::SYS_ioctl, BAD_FD, request, 0) }
}

fn mmap(prot: libc::c_int) -> libc::c_long {
    // SAFETY: a fresh anonymous private mapping; nothing else refers to it.
    unsafe {
        libc::syscall(
            libc::SYS_mmap,
            0,
            4096,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    }
}

fn socket(domain: libc::c_int) -> libc::c_long {
    // SAFETY: socket takes plain integers.
    unsafe { libc::syscall(libc::SYS_socket, domain, libc::SOCK_STREAM, 0) }
}

/// What every role must allow: write to stderr, futex wake, anonymous RW memory, close,
/// clock_gettime.
fn runtime_basics() -> i32 {
    let msg = b"";
    // SAFETY: writes zero bytes from a valid buffer to stderr.
    let w = unsafe { libc::syscall(libc::SYS_write, 2, msg.as_ptr(), 0) };
    let word = 0u32;
    // SAFETY: FUTEX_WAKE on a valid u32 wakes nobody.
    let f = unsafe { libc::syscall(libc::SYS_futex, &word, libc::FUTEX_WAKE, 1, 0, 0, 0) };
    let m = mmap(libc::PROT_READ | libc::PROT_WRITE);
    // SAFETY: unmapping the page just mapped.
    let u = unsafe { libc::syscall(libc::SYS_munmap, m, 4096) };
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec into `ts`.
    let c = unsafe { libc::syscall(libc::SYS_clock_gettime, libc::CLOCK_MONOTONIC, &mut ts) };
    // SAFETY: close of a descriptor that is not open: EBADF.
    let x = unsafe { libc::syscall(libc::SYS_close, BAD_FD) };
    i32::from(w < 0 || f < 0 || m < 0 || u < 0 || c < 0) + expect(x, libc::EBADF)
}

#[test]
fn no_role_may_run_programs_or_open_files() {
    for role in Role::ALL {
        killed(role, execve);
        killed(role, openat);
    }
}

#[test]
fn every_role_allows_what_the_runtime_needs() {
    for role in Role::ALL {
        allowed(role, runtime_basics);
    }
}

#[test]
fn no_role_may_make_memory_executable() {
    for role in Role::ALL {
        killed(role, || {
            mmap(libc::PROT_READ | libc::PROT_EXEC);
            2
        });
        killed(role, || {
            let m = mmap(libc::PROT_READ | libc::PROT_WRITE);
            // SAFETY: changing the protection of the page just mapped.
            unsafe {
                libc::syscall(
                    libc::SYS_mprotect,
                    m,
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                )
            };
            2
        });
    }
}

#[test]
fn vcpu_threads_may_run_the_guest_but_not_build_vms() {
    allowed(Role::Vcpu, || expect(ioctl(KVM_RUN), libc::EBADF));
    allowed(Role::Vcpu, || expect(ioctl(KVM_SIGNAL_MSI), libc::EBADF));
    killed(Role::Vcpu, || {
        ioctl(KVM_CREATE_VM);
        2
    });
    killed(Role::Vcpu, || {
        ioctl(KVM_SET_USER_MEMORY_REGION);
        2
    });
    killed(Role::Vcpu, || {
        ioctl(TUNSETIFF);
        2
    });
    // A vCPU has no business with sockets or reading files.
    killed(Role::Vcpu, || {
        socket(libc::AF_UNIX);
        2
    });
    killed(Role::Vcpu, || {
        let mut b = [0u8; 1];
        // SAFETY: reads at most one byte into `b` from a descriptor that is not open.
        unsafe { libc::syscall(libc::SYS_read, BAD_FD, b.as_mut_ptr(), 1) };
        2
    });
}

#[test]
fn device_workers_may_do_backend_io_over_unix_sockets_only() {
    allowed(Role::DeviceWorker, || {
        let s = socket(libc::AF_UNIX);
        let mut b = [0u8; 1];
        // SAFETY: reads at most one byte into `b`; BAD_FD is not open.
        let r = unsafe { libc::syscall(libc::SYS_pread64, BAD_FD, b.as_mut_ptr(), 1, 0) };
        // SAFETY: fdatasync and fallocate on a descriptor that is not open.
        let d = unsafe { libc::syscall(libc::SYS_fdatasync, BAD_FD) };
        // SAFETY: as above.
        let a = unsafe { libc::syscall(libc::SYS_fallocate, BAD_FD, 0, 0, 4096) };
        // SAFETY: io_uring_enter on a descriptor that is not open.
        let u = unsafe { libc::syscall(libc::SYS_io_uring_enter, BAD_FD, 0, 0, 0, 0, 0) };
        i32::from(s < 0)
            + expect(r, libc::EBADF)
            + expect(d, libc::EBADF)
            + expect(a, libc::EBADF)
            + expect(u, libc::EBADF)
    });
    killed(Role::DeviceWorker, || {
        socket(libc::AF_INET);
        2
    });
    killed(Role::DeviceWorker, || {
        socket(libc::AF_NETLINK);
        2
    });
    // Sockets are used connected only: no datagrams to an address.
    killed(Role::DeviceWorker, || {
        let addr = [0u8; 16];
        // SAFETY: sendto reads 16 bytes of `addr` and nothing from the NULL buffer of length 0.
        unsafe { libc::syscall(libc::SYS_sendto, BAD_FD, 0usize, 0, 0, addr.as_ptr(), 16) };
        2
    });
    // Workers neither run vCPUs nor reconfigure KVM or the tap.
    killed(Role::DeviceWorker, || {
        ioctl(KVM_RUN);
        2
    });
    killed(Role::DeviceWorker, || {
        ioctl(TUNSETIFF);
        2
    });
    // A worker does not start threads or processes.
    killed(Role::DeviceWorker, fork_like_clone);
}

#[test]
fn the_vmm_thread_may_activate_devices_and_start_threads_only() {
    allowed(Role::Vmm, || {
        expect(ioctl(KVM_IOEVENTFD), libc::EBADF) + expect(ioctl(TUNSETOFFLOAD), libc::EBADF)
    });
    // Starting a device worker: a real thread, which then installs the worker filter on top.
    allowed(Role::Vmm, || {
        let worker = std::thread::spawn(|| {
            let filters = Filters::new(SeccompLevel::On).expect("the filters compile");
            filters.install(Role::DeviceWorker).is_ok() && socket(libc::AF_UNIX) >= 0
        });
        i32::from(!worker.join().unwrap_or(false))
    });
    killed(Role::Vmm, || {
        ioctl(KVM_RUN);
        2
    });
    killed(Role::Vmm, || {
        ioctl(KVM_CREATE_VM);
        2
    });
    killed(Role::Vmm, fork_like_clone);
}

#[test]
fn log_level_lets_a_forbidden_syscall_through() {
    for role in Role::ALL {
        let ended = in_filtered_child(SeccompLevel::Log, role, || {
            // Forbidden for every role; at `log` the kernel logs it and returns its result.
            // SAFETY: getppid takes no arguments.
            let ppid = unsafe { libc::syscall(libc::SYS_getppid) };
            i32::from(ppid <= 0)
        });
        assert_eq!(ended, Ended::Exited(0), "{}", role.name());
    }
}

#[test]
fn off_installs_nothing() {
    let ended = in_filtered_child(SeccompLevel::Off, Role::Vcpu, || {
        // SAFETY: getppid takes no arguments.
        let ppid = unsafe { libc::syscall(libc::SYS_getppid) };
        i32::from(ppid <= 0)
    });
    assert_eq!(ended, Ended::Exited(0));
}

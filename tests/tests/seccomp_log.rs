//! `--seccomp log`: a forbidden syscall runs and the kernel logs it (`audit: type=1326 ...
//! syscall=N`). The kernel rate-limits these records (10 per 5 s when no audit daemon takes
//! them) and writes them from a kernel thread, so the test waits for the record and, if a burst
//! of other records used up the window, tries again in the next one.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use veil_vmm::SeccompLevel;
use veil_vmm::seccomp::{Filters, Role};

/// Forks a child that installs the vCPU filter at `log` and calls getppid (forbidden); returns
/// its pid once it exited normally.
fn child_calling_getppid(filters: &Filters) -> i32 {
    // SAFETY: the child only makes raw syscalls and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = match filters.install(Role::Vcpu) {
            // SAFETY: getppid takes no arguments.
            Ok(()) => i32::from(unsafe { libc::syscall(libc::SYS_getppid) } <= 0),
            Err(_) => 100,
        };
        // SAFETY: leaving the forked child.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child did not run on after the forbidden syscall (status {status:#x})"
    );
    pid
}

/// Reads the kernel log's new records until one names `pid` and getppid, or `limit` passes.
fn wait_for_record(kmsg: &mut std::fs::File, pid: i32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = vec![0u8; 8192];
    while Instant::now() < deadline {
        match kmsg.read(&mut buf) {
            Ok(n) => {
                let record = String::from_utf8_lossy(&buf[..n]);
                if record.contains("type=1326")
                    && record.contains(&format!(" pid={pid} "))
                    && record.contains(&format!(" syscall={} ", libc::SYS_getppid))
                {
                    return true;
                }
            }
            // EAGAIN: nothing new yet; EPIPE: records were overwritten, read on.
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    false
}

#[test]
fn log_level_logs_the_forbidden_syscall_in_the_kernel_log() {
    let mut kmsg = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("skipped: this test needs to read the kernel log: /dev/kmsg: {e}");
            return;
        }
    };
    kmsg.seek(SeekFrom::End(0)).expect("seeking /dev/kmsg");
    let filters = Filters::new(SeccompLevel::Log).expect("the filters compile");
    let mut tried = Vec::new();
    for attempt in 0..3 {
        if attempt > 0 {
            // A new rate-limit window.
            std::thread::sleep(Duration::from_millis(5500));
        }
        let pid = child_calling_getppid(&filters);
        if wait_for_record(&mut kmsg, pid, Duration::from_secs(2)) {
            return;
        }
        tried.push(pid);
    }
    panic!("no seccomp log record (type=1326, syscall=getppid) for children {tried:?}");
}

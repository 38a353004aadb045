//! Namespaces: joining a network namespace, a new mount namespace with the jail as its root, and
//! a new pid namespace.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Errors while entering namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("opening network namespace {path}: {source}")]
    OpenNetns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("joining network namespace {path} (setns): {source}")]
    JoinNetns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unshare({what}): {source}")]
    Unshare {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{step} {path}: {source}")]
    Mount {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("fork into the new pid namespace: {0}")]
    Fork(#[source] std::io::Error),
}

/// Moves this process into the network namespace at `path` (e.g. `/var/run/netns/<name>`).
pub fn join_netns(path: &Path) -> Result<(), NsError> {
    let f = File::open(path).map_err(|source| NsError::OpenNetns {
        path: path.to_path_buf(),
        source,
    })?;
    // SAFETY: `f` is an open descriptor; setns only changes this thread's namespace (the jailer
    // is single-threaded, so that is the whole process).
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(NsError::JoinNetns {
            path: path.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Enters a new mount namespace and makes `root` its `/`: mounts become slaves of the host's (the
/// host's later mounts may reach in; nothing done here reaches out), `root` is bind-mounted on
/// itself, pivoted to, and the old root is detached so no host path stays reachable.
pub fn pivot_into(root: &Path) -> Result<(), NsError> {
    unshare(libc::CLONE_NEWNS, "CLONE_NEWNS")?;
    let croot = cstr(root)?;
    let slash = c"/";
    // SAFETY: valid NUL-terminated strings or nulls where mount(2) allows them.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            slash.as_ptr(),
            std::ptr::null(),
            libc::MS_SLAVE | libc::MS_REC,
            std::ptr::null(),
        )
    };
    check(
        rc,
        "making mounts slaves (mount MS_SLAVE|MS_REC)",
        Path::new("/"),
    )?;
    // SAFETY: as above.
    let rc = unsafe {
        libc::mount(
            croot.as_ptr(),
            croot.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    };
    check(rc, "bind-mounting the jail root on itself", root)?;
    std::env::set_current_dir(root).map_err(|source| NsError::Mount {
        step: "chdir",
        path: root.to_path_buf(),
        source,
    })?;
    let dot = c".";
    // SAFETY: pivot_root(".", ".") stacks the old root on the new one at the same place
    // (pivot_root(2), "NOTES"); both arguments are valid strings.
    let rc = unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) };
    check(rc as i32, "pivot_root to", root)?;
    // SAFETY: detaches the old root stacked on "."; a valid string.
    let rc = unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) };
    check(
        rc,
        "unmounting the old root (umount2 MNT_DETACH) after pivoting to",
        root,
    )?;
    std::env::set_current_dir("/").map_err(|source| NsError::Mount {
        step: "chdir to / of",
        path: root.to_path_buf(),
        source,
    })
}

/// Unshares the pid namespace: this process stays where it is, its next child becomes pid 1 of
/// the new namespace.
pub fn unshare_pid() -> Result<(), NsError> {
    unshare(libc::CLONE_NEWPID, "CLONE_NEWPID")
}

/// Forks; `Ok(0)` in the child, `Ok(child pid)` in the parent.
pub fn fork() -> Result<libc::pid_t, NsError> {
    // SAFETY: the jailer is single-threaded, so the child is a full copy with no lock held by
    // another thread.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(NsError::Fork(std::io::Error::last_os_error()));
    }
    Ok(pid)
}

fn unshare(flag: libc::c_int, what: &'static str) -> Result<(), NsError> {
    // SAFETY: unshare only changes this process's namespaces.
    if unsafe { libc::unshare(flag) } != 0 {
        return Err(NsError::Unshare {
            what,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn check(rc: i32, step: &'static str, path: &Path) -> Result<(), NsError> {
    if rc != 0 {
        return Err(NsError::Mount {
            step,
            path: path.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn cstr(path: &Path) -> Result<CString, NsError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| NsError::Mount {
        step: "path with a NUL byte:",
        path: path.to_path_buf(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })
}

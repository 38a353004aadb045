//! Closing file descriptors the jailer inherited: only stdin, stdout and stderr pass into the jail.

use std::path::Path;

/// Why inherited descriptors could not be closed.
#[derive(Debug, thiserror::Error)]
pub enum FdsError {
    #[error("listing open descriptors in /proc/self/fd: {0}")]
    List(#[source] std::io::Error),
    #[error("closing inherited descriptor {fd}: {source}")]
    Close {
        fd: i32,
        #[source]
        source: std::io::Error,
    },
}

/// Closes every descriptor above 2. Call first thing, before the jailer opens anything of its own.
pub fn close_inherited() -> Result<(), FdsError> {
    // SAFETY: close_range only closes descriptors; nothing in this process uses any above 2 yet
    // (this runs before the jailer opens files).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if rc == 0 {
        return Ok(());
    }
    // Kernels before 5.9 lack close_range: close what /proc lists.
    let fds: Vec<i32> = std::fs::read_dir(Path::new("/proc/self/fd"))
        .map_err(FdsError::List)?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: as above, no descriptor above 2 belongs to this program yet; the one used to
        // read /proc/self/fd is closed already (EBADF is ignored).
        if unsafe { libc::close(fd) } != 0 {
            let source = std::io::Error::last_os_error();
            if source.raw_os_error() != Some(libc::EBADF) {
                return Err(FdsError::Close { fd, source });
            }
        }
    }
    Ok(())
}

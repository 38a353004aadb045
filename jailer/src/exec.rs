//! The last steps: checking the exec file can run alone in the jail, dropping to the given
//! uid/gid, detaching from the terminal if asked, and replacing the jailer with the exec file.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// Errors from checking, dropping privileges and exec.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("exec file {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("exec file {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("exec file {path} is not a 64-bit little-endian ELF executable")]
    NotElf { path: PathBuf },
    #[error(
        "exec file {path} is dynamically linked (it needs {interp}), but the jail holds only the \
         exec file itself: link it statically (see docs/jailer.md)"
    )]
    Dynamic { path: PathBuf, interp: String },
    #[error("{call}({id}): {source}")]
    Drop {
        call: &'static str,
        id: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("setgroups (clearing supplementary groups): {0}")]
    Groups(#[source] std::io::Error),
    #[error(
        "setsid (daemonize): {0}; the jailer must not lead its process group (start it from a \
         program, or through setsid(1), rather than directly from an interactive shell)"
    )]
    Setsid(#[source] std::io::Error),
    #[error("redirecting descriptor {fd} to /dev/null (daemonize): {source}")]
    Redirect {
        fd: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("exec {path} inside the jail: {source}")]
    Exec {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

const PT_INTERP: u32 = 3;

/// Checks `path` is a regular 64-bit ELF file with no program interpreter (statically linked),
/// since nothing but the file itself is copied into the jail.
pub fn check_static(path: &Path) -> Result<(), ExecError> {
    let open_err = |source| ExecError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(open_err)?;
    if !f.metadata().map_err(open_err)?.is_file() {
        return Err(ExecError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let not_elf = || ExecError::NotElf {
        path: path.to_path_buf(),
    };
    let mut hdr = [0u8; 64];
    f.read_exact(&mut hdr).map_err(|_| not_elf())?;
    if &hdr[..4] != b"\x7fELF" || hdr[4] != 2 || hdr[5] != 1 {
        return Err(not_elf());
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u64_at =
        |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes sliced"));
    let phoff = u64_at(&hdr, 32);
    let phentsize = usize::from(u16_at(&hdr, 54));
    let phnum = usize::from(u16_at(&hdr, 56));
    if phentsize < 56 || phnum == 0 {
        return Err(not_elf());
    }
    let mut phdrs = vec![0u8; phentsize * phnum];
    f.seek(SeekFrom::Start(phoff)).map_err(|_| not_elf())?;
    f.read_exact(&mut phdrs).map_err(|_| not_elf())?;
    for ph in phdrs.chunks_exact(phentsize) {
        if u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]) == PT_INTERP {
            let (off, size) = (u64_at(ph, 8), u64_at(ph, 32).min(4096));
            let mut interp = vec![0u8; usize::try_from(size).unwrap_or(0)];
            f.seek(SeekFrom::Start(off)).map_err(|_| not_elf())?;
            f.read_exact(&mut interp).map_err(|_| not_elf())?;
            let interp = String::from_utf8_lossy(&interp)
                .trim_end_matches('\0')
                .to_string();
            return Err(ExecError::Dynamic {
                path: path.to_path_buf(),
                interp,
            });
        }
    }
    Ok(())
}

/// Clears supplementary groups, then sets the gid and the uid (in that order: after setuid the
/// process could no longer change its gid).
pub fn drop_privileges(uid: u32, gid: u32) -> Result<(), ExecError> {
    // SAFETY: a zero-length list with a null pointer is how setgroups clears the groups.
    if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 {
        return Err(ExecError::Groups(std::io::Error::last_os_error()));
    }
    // SAFETY: plain syscalls on integers.
    if unsafe { libc::setgid(gid) } != 0 {
        return Err(ExecError::Drop {
            call: "setgid",
            id: gid,
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: as above.
    if unsafe { libc::setuid(uid) } != 0 {
        return Err(ExecError::Drop {
            call: "setuid",
            id: uid,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Starts a new session, leaving the controlling terminal (done early: it cannot fail later, after
/// the pivot, where a failure could not be cleaned up).
pub fn new_session() -> Result<(), ExecError> {
    // SAFETY: setsid has no memory effects.
    if unsafe { libc::setsid() } < 0 {
        return Err(ExecError::Setsid(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Points stdin, stdout and stderr at `dev_null` (opened before the pivot: the jail has no
/// /dev/null).
pub fn redirect_stdio(dev_null: &File) -> Result<(), ExecError> {
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors, which this process owns; `dev_null` is open.
        if unsafe { libc::dup2(dev_null.as_raw_fd(), fd) } < 0 {
            return Err(ExecError::Redirect {
                fd,
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

/// Replaces this process with `path` (a path inside the jail) and `args`; returns only on error.
pub fn exec(path: &Path, args: &[OsString]) -> ExecError {
    let source = std::process::Command::new(path).args(args).exec();
    ExecError::Exec {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_dynamic_from_static_and_non_elf() {
        // The test binary itself is dynamically linked on the gnu target.
        let me = std::env::current_exe().unwrap();
        match check_static(&me) {
            Err(ExecError::Dynamic { interp, .. }) => assert!(interp.contains("ld"), "{interp}"),
            Ok(()) => {} // built with crt-static: nothing to see
            Err(e) => panic!("{e}"),
        }
        let text = std::env::temp_dir().join(format!("veil-notelf-{}", std::process::id()));
        std::fs::write(&text, "#!/bin/sh\necho hi\n").unwrap();
        assert!(matches!(check_static(&text), Err(ExecError::NotElf { .. })));
        std::fs::remove_file(&text).unwrap();
        assert!(matches!(
            check_static(Path::new("/")),
            Err(ExecError::NotAFile { .. })
        ));
        assert!(matches!(
            check_static(Path::new("/no/such/file")),
            Err(ExecError::Open { .. })
        ));
    }
}

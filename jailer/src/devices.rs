//! Device nodes in the jail's `/dev`: made with mknod from the host's node numbers and given to
//! the jailed uid/gid, mode 0600.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::fs::{FsError, chmod, chown, mkdir};

/// Errors while making device nodes.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("host device {path} is missing; Veil needs it: {source}")]
    Missing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("host path {path} is not a character device")]
    NotCharDevice { path: PathBuf },
    #[error("mknod {path}: {source}")]
    Mknod {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// A node Veil may need: its path under `/dev` and whether the jail is useless without it.
#[derive(Debug, Clone, Copy)]
pub struct Node {
    /// Path below `/dev`.
    pub name: &'static str,
    /// `false`: made only if the host has it.
    pub required: bool,
}

/// `/dev/kvm` (the VM), `/dev/net/tun` (taps), `/dev/urandom` (randomness), `/dev/sev` (SEV
/// platform commands; only on SEV hosts).
pub const NODES: &[Node] = &[
    Node {
        name: "kvm",
        required: true,
    },
    Node {
        name: "net/tun",
        required: true,
    },
    Node {
        name: "urandom",
        required: true,
    },
    Node {
        name: "sev",
        required: false,
    },
];

/// Makes `NODES` under `<root>/dev`, owned by `uid:gid`; returns the names made.
pub fn make_nodes(root: &Path, uid: u32, gid: u32) -> Result<Vec<&'static str>, DeviceError> {
    make_nodes_from(Path::new("/dev"), root, uid, gid, NODES)
}

/// As [`make_nodes`], reading node numbers from `host_dev` (a test can point it elsewhere).
pub fn make_nodes_from(
    host_dev: &Path,
    root: &Path,
    uid: u32,
    gid: u32,
    nodes: &[Node],
) -> Result<Vec<&'static str>, DeviceError> {
    let mut made = Vec::new();
    for node in nodes {
        let host = host_dev.join(node.name);
        let meta = match std::fs::metadata(&host) {
            Ok(m) => m,
            Err(e) if !node.required && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(DeviceError::Missing { path: host, source }),
        };
        if !meta.file_type().is_char_device() {
            return Err(DeviceError::NotCharDevice { path: host });
        }
        let path = root.join("dev").join(node.name);
        let mut missing: Vec<&Path> = path
            .parent()
            .expect("nodes live in dev/")
            .ancestors()
            .take_while(|d| *d != root && !d.exists())
            .collect();
        missing.reverse();
        for dir in missing {
            mkdir(dir)?;
        }
        mknod_char(&path, meta.rdev())?;
        chmod(&path, 0o600)?;
        chown(&path, uid, gid)?;
        made.push(node.name);
    }
    Ok(made)
}

fn mknod_char(path: &Path, rdev: u64) -> Result<(), DeviceError> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| DeviceError::Mknod {
        path: path.to_path_buf(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })?;
    // SAFETY: `c` is a NUL-terminated path; mknod reads it and creates a node.
    if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, rdev) } != 0 {
        return Err(DeviceError::Mknod {
            path: path.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_host_numbers_and_skips_missing_optional_nodes() {
        if is_not_root() {
            eprintln!("skipped: mknod needs root");
            return;
        }
        let root = std::env::temp_dir().join(format!("veil-dev-{}", std::process::id()));
        std::fs::create_dir(&root).unwrap();
        let nodes = [
            Node {
                name: "urandom",
                required: true,
            },
            Node {
                name: "net/tun",
                required: true,
            },
            Node {
                name: "no-such-node",
                required: false,
            },
        ];
        let made = make_nodes_from(Path::new("/dev"), &root, 1234, 4321, &nodes).unwrap();
        assert_eq!(made, ["urandom", "net/tun"]);
        let m = std::fs::metadata(root.join("dev/urandom")).unwrap();
        assert_eq!(m.rdev(), std::fs::metadata("/dev/urandom").unwrap().rdev());
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1234, 4321, 0o600));
        let missing = [Node {
            name: "no-such-node",
            required: true,
        }];
        let err = make_nodes_from(Path::new("/dev"), &root, 0, 0, &missing).unwrap_err();
        assert!(err.to_string().contains("/dev/no-such-node"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    fn is_not_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() != 0 }
    }
}

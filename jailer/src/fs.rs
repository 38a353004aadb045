//! The jail's directory tree on the host: `<base>/<exec-name>/<id>/root`, with the exec file
//! copied in. The `root` directory becomes `/` for the jailed process.

use std::ffi::CString;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::cleanup::Undo;

/// Errors while building the jail's files.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error(
        "jail directory {path} already exists: another jail may be using this id; remove it \
         first if it is stale"
    )]
    JailExists { path: PathBuf },
    #[error("creating directory {path}: {source}")]
    Mkdir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("copying exec file {from} to {to}: {source}")]
    Copy {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("setting owner {uid}:{gid} of {path}: {source}")]
    Chown {
        path: PathBuf,
        uid: u32,
        gid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("setting mode {mode:o} of {path}: {source}")]
    Chmod {
        path: PathBuf,
        mode: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("statvfs {path}: {source}")]
    Statvfs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the chroot base {path} is on a file system mounted {flag}: the jail could not {what}; \
         pick another --chroot-base-dir"
    )]
    MountFlag {
        path: PathBuf,
        flag: &'static str,
        what: &'static str,
    },
}

/// Where a jail's files go.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `--chroot-base-dir`.
    pub base: PathBuf,
    /// `<base>/<exec-name>/<id>`: the jail directory (removed whole on failure).
    pub jail_dir: PathBuf,
    /// `<jail_dir>/root`: the jailed process's `/`.
    pub root: PathBuf,
    /// The exec file's name, which it keeps inside the jail (`/<exec-name>`).
    pub exec_name: String,
}

impl Layout {
    /// The layout for exec file name `exec_name` and jail id `id` under `base`.
    pub fn new(base: &Path, exec_name: &str, id: &str) -> Layout {
        let jail_dir = base.join(exec_name).join(id);
        Layout {
            base: base.to_path_buf(),
            root: jail_dir.join("root"),
            jail_dir,
            exec_name: exec_name.to_string(),
        }
    }

    /// The exec file as the jailed process sees it.
    pub fn exec_in_jail(&self) -> PathBuf {
        Path::new("/").join(&self.exec_name)
    }

    /// The exec file's copy as the host sees it.
    pub fn exec_on_host(&self) -> PathBuf {
        self.root.join(&self.exec_name)
    }

    /// Creates `<jail_dir>/root` (and whatever above it is missing), refusing a jail directory
    /// that already exists, and gives `root` to `uid:gid` so the jailed process can create its
    /// sockets there. Everything created is recorded in `undo`.
    pub fn create(&self, uid: u32, gid: u32, undo: &mut Undo) -> Result<(), FsError> {
        let parent = self.jail_dir.parent().expect("jail_dir is base/exec/id");
        let missing: Vec<&Path> = parent.ancestors().take_while(|p| !p.exists()).collect();
        for dir in missing.into_iter().rev() {
            match mkdir(dir) {
                Ok(()) => undo.remove_dir_if_empty(dir.to_path_buf()),
                Err(FsError::Mkdir { source, .. }) if source.kind() == ErrorKind::AlreadyExists => {
                }
                Err(e) => return Err(e),
            }
        }
        match mkdir(&self.jail_dir) {
            Ok(()) => undo.remove_tree(self.jail_dir.clone()),
            Err(FsError::Mkdir { source, .. }) if source.kind() == ErrorKind::AlreadyExists => {
                return Err(FsError::JailExists {
                    path: self.jail_dir.clone(),
                });
            }
            Err(e) => return Err(e),
        }
        mkdir(&self.root)?;
        check_mount_flags(&self.root, &self.base)?;
        chown(&self.root, uid, gid)
    }

    /// Copies the exec file in as `/<exec-name>`, root-owned, mode 0555 (runnable by the jailed
    /// uid, writable by nobody there).
    pub fn copy_exec(&self, from: &Path) -> Result<(), FsError> {
        let to = self.exec_on_host();
        std::fs::copy(from, &to).map_err(|source| FsError::Copy {
            from: from.to_path_buf(),
            to: to.clone(),
            source,
        })?;
        chmod(&to, 0o555)
    }
}

/// Creates one directory, mode 0755.
pub fn mkdir(path: &Path) -> Result<(), FsError> {
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(path)
        .map_err(|source| FsError::Mkdir {
            path: path.to_path_buf(),
            source,
        })
}

/// Sets the owner of `path` (not following a symlink).
pub fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), FsError> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|source| FsError::Chown {
        path: path.to_path_buf(),
        uid,
        gid,
        source,
    })
}

/// Sets the permission bits of `path`.
pub fn chmod(path: &Path, mode: u32) -> Result<(), FsError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        FsError::Chmod {
            path: path.to_path_buf(),
            mode,
            source,
        }
    })
}

/// A jail on a `noexec` or `nodev` mount would fail later, inside, with a less clear error.
fn check_mount_flags(root: &Path, base: &Path) -> Result<(), FsError> {
    let c = CString::new(root.as_os_str().as_bytes()).map_err(|_| FsError::Statvfs {
        path: root.to_path_buf(),
        source: std::io::Error::from(ErrorKind::InvalidInput),
    })?;
    // SAFETY: statvfs is plain old data; zeroed is a valid value that the call overwrites.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(FsError::Statvfs {
            path: root.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    let flag = |flag, what| FsError::MountFlag {
        path: base.to_path_buf(),
        flag,
        what,
    };
    if st.f_flag & libc::ST_NOEXEC != 0 {
        return Err(flag("noexec", "run the exec file"));
    }
    if st.f_flag & libc::ST_NODEV != 0 {
        return Err(flag("nodev", "open its device nodes"));
    }
    Ok(())
}

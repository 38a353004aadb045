//! The disk image: a raw file accessed with vectored positional I/O straight into guest memory.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use log::warn;

use super::request::{ID_LEN, SECTOR_SIZE};
use crate::virtio::iov::IoVecs;

/// Errors from opening a disk image.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The image could not be opened.
    #[error("disk image {path}: {source}")]
    Open {
        /// The image path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The image is smaller than one sector.
    #[error("disk image {path} is {size} bytes, smaller than one sector")]
    TooSmall {
        /// The image path.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
}

/// An open disk image.
#[derive(Debug)]
pub struct Disk {
    file: File,
    capacity: u64,
    read_only: bool,
    id: [u8; ID_LEN],
}

fn cvt(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

static ZEROES: [u8; 65536] = [0; 65536];

impl Disk {
    /// Opens `path`; `direct` bypasses the host page cache (O_DIRECT). `id` defaults to one made
    /// from the file's device and inode numbers.
    pub fn open(
        path: &Path,
        read_only: bool,
        direct: bool,
        id: Option<&str>,
    ) -> Result<Self, DiskError> {
        let open_err = |source| DiskError::Open {
            path: path.to_owned(),
            source,
        };
        let mut opts = OpenOptions::new();
        opts.read(true).write(!read_only);
        if direct {
            opts.custom_flags(libc::O_DIRECT);
        }
        let file = opts.open(path).map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        let size = meta.len();
        if size < SECTOR_SIZE {
            return Err(DiskError::TooSmall {
                path: path.to_owned(),
                size,
            });
        }
        if size % SECTOR_SIZE != 0 {
            warn!(
                "disk image {}: size {size} is not a multiple of {SECTOR_SIZE}; the last {} bytes are not visible to the guest",
                path.display(),
                size % SECTOR_SIZE
            );
        }
        let mut idb = [0u8; ID_LEN];
        let text = match id {
            Some(s) => s.to_owned(),
            None => format!("{:x}{:x}", meta.dev(), meta.ino()),
        };
        let n = text.len().min(ID_LEN);
        idb[..n].copy_from_slice(&text.as_bytes()[..n]);
        Ok(Self {
            file,
            capacity: size / SECTOR_SIZE,
            read_only,
            id: idb,
        })
    }

    /// Size in sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether the guest may only read.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The id string GET_ID returns (NUL-padded).
    pub fn id(&self) -> &[u8; ID_LEN] {
        &self.id
    }

    /// The file (for io_uring submissions).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Reads into `iov` (guest memory) from byte `offset`, all of it or an error.
    pub fn read_at(&self, iov: &mut IoVecs, offset: u64) -> io::Result<()> {
        let fd = self.file.as_raw_fd();
        let end = (
            io::ErrorKind::UnexpectedEof,
            "disk image ended before the request",
        );
        transfer_all(iov, offset, end, |list, at| {
            // SAFETY: the iovecs point into mapped guest memory of the stated lengths; the
            // count is bounded by MAX_IOVECS, below the kernel's IOV_MAX.
            unsafe { libc::preadv(fd, list.as_ptr(), list.len() as libc::c_int, at) }
        })
    }

    /// Writes `iov` (guest memory) at byte `offset`, all of it or an error.
    pub fn write_at(&self, iov: &mut IoVecs, offset: u64) -> io::Result<()> {
        let fd = self.file.as_raw_fd();
        let end = (io::ErrorKind::WriteZero, "disk write made no progress");
        transfer_all(iov, offset, end, |list, at| {
            // SAFETY: as in `read_at`; the kernel only reads the buffers.
            unsafe { libc::pwritev(fd, list.as_ptr(), list.len() as libc::c_int, at) }
        })
    }

    /// Makes completed writes durable (fdatasync).
    pub fn flush(&self) -> io::Result<()> {
        // SAFETY: fdatasync on a file descriptor we own.
        cvt(unsafe { libc::fdatasync(self.file.as_raw_fd()) })
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
        // SAFETY: fallocate on a file descriptor we own; the range was checked against capacity.
        cvt(unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                mode,
                offset as libc::off_t,
                len as libc::off_t,
            )
        })
    }

    /// Deallocates a range (reads back as zeroes).
    pub fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.fallocate(
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    }

    /// Zeroes a range: punches a hole if `unmap`, else FALLOC_FL_ZERO_RANGE, falling back to a
    /// hole and then to writing zeroes where the file system supports neither.
    pub fn write_zeroes(&self, offset: u64, len: u64, unmap: bool) -> io::Result<()> {
        let first = if unmap {
            self.discard(offset, len)
        } else {
            self.fallocate(
                libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            )
        };
        match first {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
            other => return other,
        }
        match self.discard(offset, len) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
            other => return other,
        }
        let mut at = offset;
        let end = offset + len;
        while at < end {
            let n = (end - at).min(ZEROES.len() as u64) as usize;
            // SAFETY: writes `n` bytes from a static buffer of at least that length.
            let r = unsafe {
                libc::pwrite(
                    self.file.as_raw_fd(),
                    ZEROES.as_ptr().cast(),
                    n,
                    at as libc::off_t,
                )
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            at += r as u64;
        }
        Ok(())
    }
}

/// Runs `op` (a preadv/pwritev at a file offset) until every byte of `iov` has moved, retrying on
/// EINTR; a call that moves nothing ends the request with the `no_progress` error.
fn transfer_all(
    iov: &mut IoVecs,
    mut offset: u64,
    no_progress: (io::ErrorKind, &'static str),
    op: impl Fn(&[libc::iovec], libc::off_t) -> isize,
) -> io::Result<()> {
    while iov.total() > 0 {
        let n = op(iov.as_slice(), offset as libc::off_t);
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(no_progress.0, no_progress.1));
        }
        // n > 0 was checked above.
        iov.advance(n as usize);
        offset += n as u64;
    }
    Ok(())
}

//! Moving bytes between guest buffers and the host without extra copies: iovecs that point
//! straight into guest memory (for preadv/pwritev, readv/writev, getrandom), and small copies of
//! headers and status bytes that may straddle descriptors.

use vm_memory::{Address, Bytes, GuestMemoryBackend, GuestMemoryMmap, VolatileSlice};

use super::chain::Segment;

/// The most iovecs one request may need (the kernel's IOV_MAX).
pub const MAX_IOVECS: usize = 1024;

/// Errors from mapping guest buffers.
#[derive(Debug, thiserror::Error)]
pub enum IovError {
    /// A buffer that was checked at parse time is no longer mapped (memory changed under us).
    #[error("guest buffer {addr:#x}+{len:#x} is not mapped")]
    Unmapped {
        /// Guest address.
        addr: u64,
        /// Length.
        len: usize,
    },
    /// The request needs more than [`MAX_IOVECS`] host buffers.
    #[error("request needs more than {MAX_IOVECS} host buffers")]
    TooMany,
    /// The requested byte range is past the end of the buffers.
    #[error("byte range {offset:#x}+{len:#x} is past the end of the guest buffers")]
    OutOfRange {
        /// Offset into the buffers.
        offset: u64,
        /// Length requested.
        len: u64,
    },
}

/// A reusable list of iovecs into guest memory.
///
/// The pointers are only valid while the guest memory they came from is alive; the owner fills
/// the list, makes one system call with it and clears it, all while holding that memory.
#[derive(Debug, Default)]
pub struct IoVecs {
    iov: Vec<libc::iovec>,
    total: usize,
}

// SAFETY: the raw pointers in the iovecs are plain addresses into guest memory that is shared with
// the guest anyway; the list is only dereferenced by system calls made by its owner.
unsafe impl Send for IoVecs {}

impl IoVecs {
    /// An empty list with room for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            iov: Vec::with_capacity(n),
            total: 0,
        }
    }

    /// Empties the list (keeping its storage).
    pub fn clear(&mut self) {
        self.iov.clear();
        self.total = 0;
    }

    /// The iovecs.
    pub fn as_slice(&self) -> &[libc::iovec] {
        &self.iov
    }

    /// Total bytes covered.
    pub fn total(&self) -> usize {
        self.total
    }

    fn push_slice(&mut self, s: &VolatileSlice<'_, ()>) -> Result<(), IovError> {
        if self.iov.len() >= MAX_IOVECS {
            return Err(IovError::TooMany);
        }
        self.iov.push(libc::iovec {
            iov_base: s.ptr_guard_mut().as_ptr().cast(),
            iov_len: s.len(),
        });
        self.total += s.len();
        Ok(())
    }

    /// Drops the first `n` bytes (after a short read or write).
    pub fn advance(&mut self, mut n: usize) {
        let mut drop = 0;
        for v in &mut self.iov {
            if n == 0 {
                break;
            }
            if n >= v.iov_len {
                n -= v.iov_len;
                self.total -= v.iov_len;
                drop += 1;
            } else {
                // SAFETY: `n < iov_len`, so the new base stays inside the same guest buffer.
                v.iov_base = unsafe { v.iov_base.cast::<u8>().add(n).cast() };
                v.iov_len -= n;
                self.total -= n;
                n = 0;
            }
        }
        self.iov.drain(..drop);
    }

    /// Appends iovecs for bytes `[offset, offset + len)` of the buffers `segs`.
    pub fn push_range(
        &mut self,
        mem: &GuestMemoryMmap<()>,
        segs: &[Segment],
        offset: u64,
        len: u64,
    ) -> Result<(), IovError> {
        for_range(segs, offset, len, |addr, n| {
            for s in mem.get_slices(addr, n) {
                let s = s.map_err(|_| IovError::Unmapped {
                    addr: addr.0,
                    len: n,
                })?;
                self.push_slice(&s)?;
            }
            Ok(())
        })
    }
}

/// Calls `f(address, length)` for each piece of bytes `[offset, offset + len)` of `segs`.
fn for_range<F>(segs: &[Segment], offset: u64, len: u64, mut f: F) -> Result<(), IovError>
where
    F: FnMut(vm_memory::GuestAddress, usize) -> Result<(), IovError>,
{
    let mut skip = offset;
    let mut left = len;
    for seg in segs {
        if left == 0 {
            break;
        }
        let seg_len = u64::from(seg.len);
        if skip >= seg_len {
            skip -= seg_len;
            continue;
        }
        let n = (seg_len - skip).min(left);
        // `n` is at most a u32 segment length, so it fits in usize.
        f(seg.addr.unchecked_add(skip), n as usize)?;
        left -= n;
        skip = 0;
    }
    if left != 0 {
        return Err(IovError::OutOfRange { offset, len });
    }
    Ok(())
}

/// Copies bytes `[offset, offset + buf.len())` of the guest buffers `segs` into `buf`.
pub fn read_bytes<M: GuestMemoryBackend>(
    mem: &M,
    segs: &[Segment],
    offset: u64,
    buf: &mut [u8],
) -> Result<(), IovError> {
    let mut done = 0usize;
    let phys = mem;
    for_range(segs, offset, buf.len() as u64, |addr, n| {
        phys.read_slice(&mut buf[done..done + n], addr)
            .map_err(|_| IovError::Unmapped {
                addr: addr.0,
                len: n,
            })?;
        done += n;
        Ok(())
    })
}

/// Copies `data` into bytes `[offset, offset + data.len())` of the guest buffers `segs`.
pub fn write_bytes<M: GuestMemoryBackend>(
    mem: &M,
    segs: &[Segment],
    offset: u64,
    data: &[u8],
) -> Result<(), IovError> {
    let mut done = 0usize;
    let phys = mem;
    for_range(segs, offset, data.len() as u64, |addr, n| {
        phys.write_slice(&data[done..done + n], addr)
            .map_err(|_| IovError::Unmapped {
                addr: addr.0,
                len: n,
            })?;
        done += n;
        Ok(())
    })
}

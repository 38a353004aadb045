//! A tap device opened with a virtio-net header, so offloaded (checksum-less, TSO) frames pass
//! between the guest and the host stack unchanged.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

/// Offload flags for TUNSETOFFLOAD.
pub mod offload {
    /// The host may hand over frames with partial checksums.
    pub const CSUM: u32 = 0x01;
    /// TCPv4 segmentation offload.
    pub const TSO4: u32 = 0x02;
    /// TCPv6 segmentation offload.
    pub const TSO6: u32 = 0x04;
    /// TSO with ECN.
    pub const TSO_ECN: u32 = 0x08;
}

/// Errors from opening or configuring a tap.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name is empty or longer than 15 bytes.
    #[error("tap name {0:?} must be 1..=15 bytes")]
    Name(String),
    /// /dev/net/tun could not be opened.
    #[error("opening /dev/net/tun: {0}")]
    OpenTun(#[source] io::Error),
    /// An ioctl on the tap failed.
    #[error("tap {name}: {what}: {source}")]
    Ioctl {
        /// Tap name.
        name: String,
        /// Which ioctl.
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}
const _: () = assert!(std::mem::size_of::<IfReq>() == 40);

/// An open tap device (non-blocking).
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Opens (creating if needed) the tap `name` with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR and a
    /// 12-byte virtio-net header.
    pub fn open(name: &str) -> Result<Self, TapError> {
        if name.is_empty() || name.len() > 15 || name.contains('\0') {
            return Err(TapError::Name(name.into()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;
        let mut req = IfReq {
            name: [0; 16],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        let tap = Self {
            file,
            name: name.into(),
        };
        // SAFETY: TUNSETIFF reads (and may update) a 40-byte ifreq, which `req` is.
        let r = unsafe { libc::ioctl(tap.file.as_raw_fd(), TUNSETIFF, &mut req) };
        tap.check(r, "TUNSETIFF")?;
        let hdr: libc::c_int = super::HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int.
        let r = unsafe { libc::ioctl(tap.file.as_raw_fd(), TUNSETVNETHDRSZ, &hdr) };
        tap.check(r, "TUNSETVNETHDRSZ")?;
        Ok(tap)
    }

    fn check(&self, r: libc::c_int, what: &'static str) -> Result<(), TapError> {
        if r < 0 {
            return Err(TapError::Ioctl {
                name: self.name.clone(),
                what,
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Tells the kernel which offloads the guest accepts (TUN_F_* flags).
    pub fn set_offload(&self, flags: u32) -> Result<(), TapError> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        let r = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        self.check(r, "TUNSETOFFLOAD")
    }

    /// A second handle to the same tap.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            file: self.file.try_clone()?,
            name: self.name.clone(),
        })
    }

    /// Reads one frame (with its virtio-net header) into `buf`.
    pub fn read_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: reads at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::read(self.file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // n >= 0 was checked.
        Ok(n as usize)
    }

    /// Writes one frame given as iovecs (header first).
    pub fn write_frame(&self, iov: &[libc::iovec]) -> io::Result<usize> {
        // SAFETY: the caller's iovecs describe readable memory of the stated lengths.
        let n = unsafe {
            libc::writev(
                self.file.as_raw_fd(),
                iov.as_ptr(),
                iov.len() as libc::c_int,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

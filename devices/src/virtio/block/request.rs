//! virtio-blk requests, parsed from a chain the guest controls.

use vm_memory::GuestMemoryMmap;

use crate::virtio::chain::Chain;
use crate::virtio::iov::{read_bytes, write_bytes};

/// Sector size of the virtio-blk protocol.
pub const SECTOR_SIZE: u64 = 512;
/// Length of the request header (type, reserved, sector).
pub const HEADER_LEN: u64 = 16;
/// Length of one discard / write-zeroes segment.
pub const DISCARD_SEG_LEN: u64 = 16;
/// Bytes of the device id string returned by GET_ID.
pub const ID_LEN: usize = 20;

/// Request types (virtio 1.2, 5.2.6).
pub mod req_type {
    /// Read.
    pub const IN: u32 = 0;
    /// Write.
    pub const OUT: u32 = 1;
    /// Flush.
    pub const FLUSH: u32 = 4;
    /// Device id.
    pub const GET_ID: u32 = 8;
    /// Discard.
    pub const DISCARD: u32 = 11;
    /// Write zeroes.
    pub const WRITE_ZEROES: u32 = 13;
}

/// Status byte values.
pub mod status {
    /// Success.
    pub const OK: u8 = 0;
    /// I/O error (also for malformed requests).
    pub const IOERR: u8 = 1;
    /// Unsupported request.
    pub const UNSUPP: u8 = 2;
}

/// Write-zeroes flag: the device may deallocate the range.
pub const WRITE_ZEROES_UNMAP: u32 = 1;

/// What was wrong with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No writable byte for the status: the request cannot even be answered.
    #[error("no writable status byte")]
    NoStatus,
    /// Fewer than 16 readable bytes for the header (or the header in a writable buffer).
    #[error("header needs {HEADER_LEN} readable bytes, chain has {0}")]
    ShortHeader(u64),
    /// A read with readable data buffers, or a write with writable data buffers.
    #[error("{0} request with data buffers of the wrong direction")]
    WrongDirection(&'static str),
    /// Data length zero or not a multiple of the sector size.
    #[error("data length {0} is zero or not a multiple of {SECTOR_SIZE}")]
    DataLength(u64),
    /// The request reaches past the end of the disk.
    #[error("sectors {sector}+{sectors} reach past the disk's {capacity} sectors")]
    OutOfRange {
        /// First sector.
        sector: u64,
        /// Number of sectors.
        sectors: u64,
        /// Disk size in sectors.
        capacity: u64,
    },
    /// A write, discard or write-zeroes on a read-only disk.
    #[error("write to a read-only disk")]
    ReadOnly,
    /// Discard / write-zeroes data that is not a whole number of segments, or too many.
    #[error("{0} bytes of discard/write-zeroes segments (need 1..={1} segments of 16 bytes)")]
    Segments(u64, u32),
    /// Unknown flags in a discard / write-zeroes segment.
    #[error("segment flags {0:#x} are not supported")]
    SegmentFlags(u32),
    /// A request type the device does not implement.
    #[error("request type {0} is not supported")]
    Unsupported(u32),
    /// Guest memory went away under the request.
    #[error("guest memory access failed")]
    Memory,
}

impl RequestError {
    /// The status byte that reports this error.
    pub fn status(self) -> u8 {
        match self {
            Self::Unsupported(_) | Self::SegmentFlags(_) => status::UNSUPP,
            _ => status::IOERR,
        }
    }
}

/// A parsed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Read `len` bytes at byte `offset` into the writable buffers.
    In {
        /// Byte offset in the disk.
        offset: u64,
        /// Bytes.
        len: u64,
    },
    /// Write `len` bytes from the readable buffers (after the header) at byte `offset`.
    Out {
        /// Byte offset in the disk.
        offset: u64,
        /// Bytes.
        len: u64,
    },
    /// Make previous writes durable.
    Flush,
    /// Return the device id.
    GetId,
    /// Deallocate a range.
    Discard {
        /// Byte offset.
        offset: u64,
        /// Bytes.
        len: u64,
    },
    /// Zero a range (deallocating it if `unmap`).
    WriteZeroes {
        /// Byte offset.
        offset: u64,
        /// Bytes.
        len: u64,
        /// Whether the range may be deallocated.
        unmap: bool,
    },
}

/// Limits the device applies when parsing.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Disk size in sectors.
    pub capacity: u64,
    /// Whether the disk is read-only.
    pub read_only: bool,
    /// Most discard / write-zeroes segments per request.
    pub max_discard_seg: u32,
}

fn range(sector: u64, bytes: u64, capacity: u64) -> Result<u64, RequestError> {
    let sectors = bytes / SECTOR_SIZE;
    match sector.checked_add(sectors) {
        Some(end) if end <= capacity => Ok(sector * SECTOR_SIZE),
        _ => Err(RequestError::OutOfRange {
            sector,
            sectors,
            capacity,
        }),
    }
}

impl Request {
    /// Where the status byte goes: the last writable byte. Fails if there is none.
    pub fn status_offset(chain: &Chain) -> Result<u64, RequestError> {
        chain
            .writable_len()
            .checked_sub(1)
            .ok_or(RequestError::NoStatus)
    }

    /// Parses the request in `chain`.
    pub fn parse(
        mem: &GuestMemoryMmap<()>,
        chain: &Chain,
        limits: &Limits,
    ) -> Result<Request, RequestError> {
        let status_at = Self::status_offset(chain)?;
        let readable = chain.readable_len();
        if readable < HEADER_LEN {
            return Err(RequestError::ShortHeader(readable));
        }
        let mut header = [0u8; HEADER_LEN as usize];
        read_bytes(mem, chain.readable(), 0, &mut header).map_err(|_| RequestError::Memory)?;
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let mut s = [0u8; 8];
        s.copy_from_slice(&header[8..16]);
        let sector = u64::from_le_bytes(s);
        let extra_readable = readable - HEADER_LEN;
        match kind {
            req_type::IN => {
                if extra_readable != 0 {
                    return Err(RequestError::WrongDirection("read"));
                }
                let len = status_at;
                if len == 0 || len % SECTOR_SIZE != 0 {
                    return Err(RequestError::DataLength(len));
                }
                let offset = range(sector, len, limits.capacity)?;
                Ok(Request::In { offset, len })
            }
            req_type::OUT => {
                if status_at != 0 {
                    return Err(RequestError::WrongDirection("write"));
                }
                if limits.read_only {
                    return Err(RequestError::ReadOnly);
                }
                let len = extra_readable;
                if len == 0 || len % SECTOR_SIZE != 0 {
                    return Err(RequestError::DataLength(len));
                }
                let offset = range(sector, len, limits.capacity)?;
                Ok(Request::Out { offset, len })
            }
            req_type::FLUSH => Ok(Request::Flush),
            req_type::GET_ID => Ok(Request::GetId),
            req_type::DISCARD | req_type::WRITE_ZEROES => {
                if limits.read_only {
                    return Err(RequestError::ReadOnly);
                }
                let max = limits.max_discard_seg;
                if extra_readable == 0
                    || extra_readable % DISCARD_SEG_LEN != 0
                    || extra_readable / DISCARD_SEG_LEN > u64::from(max)
                {
                    return Err(RequestError::Segments(extra_readable, max));
                }
                // The device advertises one segment per request (max_discard_seg = 1).
                let mut seg = [0u8; DISCARD_SEG_LEN as usize];
                read_bytes(mem, chain.readable(), HEADER_LEN, &mut seg)
                    .map_err(|_| RequestError::Memory)?;
                let mut b8 = [0u8; 8];
                b8.copy_from_slice(&seg[0..8]);
                let sector = u64::from_le_bytes(b8);
                let num = u32::from_le_bytes([seg[8], seg[9], seg[10], seg[11]]);
                let flags = u32::from_le_bytes([seg[12], seg[13], seg[14], seg[15]]);
                let len = u64::from(num) * SECTOR_SIZE;
                if len == 0 {
                    return Err(RequestError::DataLength(0));
                }
                let offset = range(sector, len, limits.capacity)?;
                if kind == req_type::DISCARD {
                    if flags != 0 {
                        return Err(RequestError::SegmentFlags(flags));
                    }
                    Ok(Request::Discard { offset, len })
                } else {
                    if flags & !WRITE_ZEROES_UNMAP != 0 {
                        return Err(RequestError::SegmentFlags(flags));
                    }
                    Ok(Request::WriteZeroes {
                        offset,
                        len,
                        unmap: flags & WRITE_ZEROES_UNMAP != 0,
                    })
                }
            }
            other => Err(RequestError::Unsupported(other)),
        }
    }
}

/// Writes the status byte of `chain` (at its last writable byte).
pub fn write_status(
    mem: &GuestMemoryMmap<()>,
    chain: &Chain,
    status: u8,
) -> Result<(), RequestError> {
    let at = Request::status_offset(chain)?;
    write_bytes(mem, chain.writable(), at, &[status]).map_err(|_| RequestError::Memory)
}

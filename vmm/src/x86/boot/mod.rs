//! Loading the kernel and the structures a boot protocol hands it.
//!
//! The kernel is an ELF (entered through its PVH note or its `e_entry` in long mode) or a bzImage
//! (64-bit entry at its load address + 0x200). Loading goes through linux-loader, which reads
//! segments straight from the file into guest memory (no intermediate copy).

pub mod linux;
pub mod pvh;

use std::fs::File;
use std::io::{Cursor, Read, Seek};
use std::path::{Path, PathBuf};

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{
    self, BzImage, Elf, KernelLoader, KernelLoaderResult, PvhBootCapability,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap, ReadVolatile};

use crate::config::{BootProtocol, Kernel};
use crate::memory::{HIGH_MEMORY_START, MemoryLayout};
use crate::x86::regs::EntryMode;

/// Where the kernel command line goes (up to 64 KiB, NUL included).
pub const CMDLINE_ADDR: u64 = 0x2_0000;
const PAGE: u64 = 4096;

/// Errors from loading a kernel or initramfs; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel file cannot be opened or read.
    #[error("kernel {kernel}: {source}")]
    KernelIo {
        /// The kernel's path.
        kernel: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The kernel file is too short to hold any header.
    #[error("kernel {kernel}: truncated ({len} bytes): too short for an ELF or bzImage header")]
    KernelTruncated {
        /// The kernel's name.
        kernel: String,
        /// Its length.
        len: u64,
    },
    /// Neither ELF nor bzImage.
    #[error("kernel {0}: not an ELF or bzImage file (no ELF magic, no \"HdrS\" at 0x202)")]
    NotAKernel(String),
    /// An ELF that is not a 64-bit little-endian x86_64 executable.
    #[error("kernel {0}: not a 64-bit x86_64 ELF file")]
    WrongElf(String),
    /// linux-loader rejected the image.
    #[error(
        "kernel {kernel}: cannot load: {} (the file is truncated or corrupt, or a segment lies outside the guest's RAM)",
        loader_reason(.error)
    )]
    KernelLoad {
        /// The kernel's name.
        kernel: String,
        /// linux-loader's error.
        error: loader::Error,
    },
    /// The image does not fit in low RAM.
    #[error(
        "kernel {kernel}: ends at {end:#x}, beyond the guest's low RAM (ends at {ram_end:#x}); give the guest more --memory"
    )]
    KernelTooBig {
        /// The kernel's name.
        kernel: String,
        /// End of the loaded image.
        end: u64,
        /// End of low RAM.
        ram_end: u64,
    },
    /// `--boot pvh` for a kernel without a PVH note.
    #[error(
        "kernel {0}: --boot pvh needs an ELF kernel with a PVH note (XEN_ELFNOTE_PHYS32_ENTRY)"
    )]
    NoPvhNote(String),
    /// A bzImage without a 64-bit entry point.
    #[error(
        "kernel {0}: this bzImage has no 64-bit entry point (boot protocol 2.12+ with XLF_KERNEL_64 needed)"
    )]
    No64BitEntry(String),
    /// The initramfs file cannot be opened or read.
    #[error("initramfs {path}: {source}")]
    InitramfsIo {
        /// The initramfs path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The initramfs does not fit between the kernel and the end of usable low memory.
    #[error(
        "initramfs {path}: {size} bytes do not fit in guest RAM: {room} bytes are free between the kernel's end ({kernel_end:#x}) and {limit:#x}; give the guest more --memory"
    )]
    InitramfsTooBig {
        /// The initramfs path.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// Bytes available.
        room: u64,
        /// End of the kernel image.
        kernel_end: u64,
        /// Highest end address allowed.
        limit: u64,
    },
    /// Writing a boot structure into guest memory failed (the layout guarantees room).
    #[error("writing boot structures into guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

/// What loading the kernel produced.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// PVH entry point, when the ELF has the note.
    pub pvh_entry: Option<u64>,
    /// 64-bit Linux-protocol entry point.
    pub entry64: u64,
    /// First byte after the loaded image.
    pub end: u64,
    /// The bzImage setup header (None for ELF kernels).
    pub header: Option<setup_header>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Elf,
    BzImage,
}

/// Tells ELF from bzImage by the first bytes of the file.
fn detect(name: &str, head: &[u8], len: u64) -> Result<Format, BootError> {
    if head.len() < 4 {
        return Err(BootError::KernelTruncated {
            kernel: name.into(),
            len,
        });
    }
    if head[..4] == *b"\x7fELF" {
        if head.len() < 20 {
            return Err(BootError::KernelTruncated {
                kernel: name.into(),
                len,
            });
        }
        // EI_CLASS 2 = 64-bit, EI_DATA 1 = little endian, e_machine 62 = x86_64.
        if head[4] != 2 || head[5] != 1 || u16::from_le_bytes([head[18], head[19]]) != 62 {
            return Err(BootError::WrongElf(name.into()));
        }
        return Ok(Format::Elf);
    }
    if head.len() >= 0x206 && head[0x202..0x206] == *b"HdrS" {
        return Ok(Format::BzImage);
    }
    if head.len() < 0x206 {
        return Err(BootError::KernelTruncated {
            kernel: name.into(),
            len,
        });
    }
    Err(BootError::NotAKernel(name.into()))
}

fn load_with<R: Read + Seek + ReadVolatile>(
    mem: &GuestMemoryMmap,
    format: Format,
    image: &mut R,
) -> Result<KernelLoaderResult, loader::Error> {
    let high = Some(GuestAddress(HIGH_MEMORY_START));
    match format {
        Format::Elf => Elf::load(mem, None, image, high),
        Format::BzImage => BzImage::load(mem, None, image, high),
    }
}

/// Loads `kernel` into guest memory.
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    layout: &MemoryLayout,
    kernel: &Kernel,
) -> Result<LoadedKernel, BootError> {
    let name = kernel.describe();
    let io_err = |source| BootError::KernelIo {
        kernel: name.clone(),
        source,
    };
    let mut head = [0u8; 0x210];
    let (format, result) = match kernel {
        Kernel::File(path) => {
            let mut file = File::open(path).map_err(io_err)?;
            let len = file.metadata().map_err(io_err)?.len();
            let n = read_head(&mut file, &mut head).map_err(io_err)?;
            let format = detect(&name, &head[..n], len)?;
            (format, load_with(mem, format, &mut file))
        }
        Kernel::Image { bytes, .. } => {
            let bytes: &[u8] = bytes;
            let n = bytes.len().min(head.len());
            let format = detect(&name, &bytes[..n], bytes.len() as u64)?;
            (format, load_with(mem, format, &mut Cursor::new(bytes)))
        }
    };
    let result = result.map_err(|error| BootError::KernelLoad {
        kernel: name.clone(),
        error,
    })?;
    if result.kernel_end > layout.low_ram_end() {
        return Err(BootError::KernelTooBig {
            kernel: name,
            end: result.kernel_end,
            ram_end: layout.low_ram_end(),
        });
    }
    match format {
        Format::Elf => Ok(LoadedKernel {
            pvh_entry: match result.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(a) => Some(a.0),
                _ => None,
            },
            entry64: result.kernel_load.0,
            end: result.kernel_end,
            header: None,
        }),
        Format::BzImage => {
            // linux-loader returns the header of every bzImage it loads; without one there is
            // no way to find the 64-bit entry point.
            let Some(header) = result.setup_header else {
                return Err(BootError::No64BitEntry(name));
            };
            let xloadflags = header.xloadflags;
            let version = header.version;
            if version < 0x20c || xloadflags & 1 == 0 {
                return Err(BootError::No64BitEntry(name));
            }
            Ok(LoadedKernel {
                pvh_entry: None,
                entry64: result.kernel_load.0 + 0x200,
                end: result.kernel_end,
                header: Some(header),
            })
        }
    }
}

/// linux-loader's message without its repeated "Kernel Loader: " prefixes.
fn loader_reason(error: &loader::Error) -> String {
    let plain =
        |e: &dyn std::fmt::Display| e.to_string().replace("Kernel Loader: ", "").to_lowercase();
    match error {
        loader::Error::Elf(e) => format!("ELF: {}", plain(e)),
        loader::Error::Bzimage(e) => format!("bzImage: {}", plain(e)),
        other => plain(other),
    }
}

/// Reads up to `buf.len()` bytes from the start of `file`, then rewinds it.
fn read_head(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    file.rewind()?;
    Ok(n)
}

/// Where an initramfs went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Initramfs {
    /// Load address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Highest page-aligned address for `size` bytes ending at or below `limit`, above `floor`.
fn place_initramfs(size: u64, floor: u64, limit: u64) -> Option<u64> {
    let start = limit.checked_sub(size)? & !(PAGE - 1);
    (start >= floor).then_some(start)
}

/// Loads the initramfs as high as fits below `limit` (exclusive end) and above the kernel.
pub fn load_initramfs(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel_end: u64,
    limit: u64,
) -> Result<Initramfs, BootError> {
    let io_err = |source| BootError::InitramfsIo {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let size = file.metadata().map_err(io_err)?.len();
    let floor = (kernel_end + PAGE - 1) & !(PAGE - 1);
    let addr = place_initramfs(size, floor, limit).ok_or_else(|| BootError::InitramfsTooBig {
        path: path.to_path_buf(),
        size,
        room: limit.saturating_sub(floor),
        kernel_end,
        limit,
    })?;
    let len = usize::try_from(size).map_err(|_| BootError::InitramfsTooBig {
        path: path.to_path_buf(),
        size,
        room: limit.saturating_sub(floor),
        kernel_end,
        limit,
    })?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, len)
        .map_err(|e| io_err(std::io::Error::other(e)))?;
    Ok(Initramfs { addr, size })
}

/// Writes the command line at [`CMDLINE_ADDR`], NUL-terminated; returns its length without NUL.
pub fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<u32, BootError> {
    mem.write_slice(cmdline.as_bytes(), GuestAddress(CMDLINE_ADDR))?;
    mem.write_obj(0u8, GuestAddress(CMDLINE_ADDR + cmdline.len() as u64))?;
    Ok(cmdline.len() as u32)
}

/// Picks the protocol: PVH when asked or (auto) when the kernel has the note.
pub fn choose(
    kernel: &LoadedKernel,
    boot: BootProtocol,
    name: &str,
) -> Result<BootProtocol, BootError> {
    match (boot, kernel.pvh_entry) {
        (BootProtocol::Pvh, None) => Err(BootError::NoPvhNote(name.into())),
        (BootProtocol::Pvh | BootProtocol::Auto, Some(_)) => Ok(BootProtocol::Pvh),
        _ => Ok(BootProtocol::Linux),
    }
}

/// The entry mode for the chosen protocol.
pub fn entry_mode(kernel: &LoadedKernel, protocol: BootProtocol) -> EntryMode {
    match (protocol, kernel.pvh_entry) {
        (BootProtocol::Pvh, Some(entry)) => EntryMode::Pvh {
            entry,
            start_info: pvh::START_INFO_ADDR,
        },
        _ => EntryMode::Linux64 {
            entry: kernel.entry64,
            boot_params: linux::BOOT_PARAMS_ADDR,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_apart() {
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[18] = 62;
        assert_eq!(detect("k", &elf, 64).unwrap(), Format::Elf);
        elf[4] = 1; // ELF32
        assert!(matches!(detect("k", &elf, 64), Err(BootError::WrongElf(_))));
        let mut bz = vec![0u8; 0x210];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(detect("k", &bz, 0x1000).unwrap(), Format::BzImage);
        assert!(matches!(
            detect("k", &[0u8; 0x210], 0x210),
            Err(BootError::NotAKernel(_))
        ));
        assert!(matches!(
            detect("k", b"\x7fEL", 3),
            Err(BootError::KernelTruncated { len: 3, .. })
        ));
        assert!(matches!(
            detect("k", &[0u8; 100], 100),
            Err(BootError::KernelTruncated { .. })
        ));
    }

    #[test]
    fn initramfs_goes_as_high_as_it_fits() {
        assert_eq!(
            place_initramfs(0x1800, 0x20_0000, 0x100_0000),
            Some(0xff_e000)
        );
        assert_eq!(
            place_initramfs(0x1000, 0x20_0000, 0x100_0000),
            Some(0xff_f000)
        );
        assert_eq!(
            place_initramfs(0xe0_0000, 0x20_0000, 0x100_0000),
            Some(0x20_0000)
        );
        assert_eq!(place_initramfs(0xe0_0001, 0x20_0000, 0x100_0000), None);
        assert_eq!(place_initramfs(u64::MAX, 0, 0x100_0000), None);
    }

    #[test]
    fn protocol_choice() {
        let with_note = LoadedKernel {
            pvh_entry: Some(0x10_0000),
            entry64: 0x10_1000,
            end: 0x20_0000,
            header: None,
        };
        let without = LoadedKernel {
            pvh_entry: None,
            ..with_note
        };
        assert_eq!(
            choose(&with_note, BootProtocol::Auto, "k").unwrap(),
            BootProtocol::Pvh
        );
        assert_eq!(
            choose(&with_note, BootProtocol::Linux, "k").unwrap(),
            BootProtocol::Linux
        );
        assert_eq!(
            choose(&without, BootProtocol::Auto, "k").unwrap(),
            BootProtocol::Linux
        );
        assert!(matches!(
            choose(&without, BootProtocol::Pvh, "k"),
            Err(BootError::NoPvhNote(_))
        ));
        assert_eq!(
            entry_mode(&with_note, BootProtocol::Linux),
            EntryMode::Linux64 {
                entry: 0x10_1000,
                boot_params: 0x7000
            }
        );
    }
}

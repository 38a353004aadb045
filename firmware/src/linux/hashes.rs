//! The kernel-hashes table QEMU writes for SEV measured direct boot
//! (`sev_add_kernel_loader_hashes`): SHA-256 of the command line, initrd and kernel, each in a
//! GUIDed entry, under a GUIDed header, padded to 16 bytes. OVMF checks the files against it.

use sha2::{Digest, Sha256};

use crate::guid::Guid;

const TABLE_GUID: Guid = Guid::new(
    0x9438d606,
    0x4f22,
    0x4cc9,
    [0xb4, 0x79, 0xa7, 0x93, 0xd4, 0x11, 0xfd, 0x21],
);
const KERNEL_GUID: Guid = Guid::new(
    0x4de79437,
    0xabd2,
    0x427f,
    [0xb8, 0x35, 0xd5, 0xb1, 0x72, 0xd2, 0x04, 0x5b],
);
const INITRD_GUID: Guid = Guid::new(
    0x44baf731,
    0x3a2f,
    0x4bd7,
    [0x9a, 0xf1, 0x41, 0xe2, 0x91, 0x69, 0x78, 0x1d],
);
const CMDLINE_GUID: Guid = Guid::new(
    0x97d02dd8,
    0xbd20,
    0x4c94,
    [0xaa, 0x78, 0xe7, 0x71, 0x4d, 0x36, 0xab, 0x2a],
);

const ENTRY_LEN: usize = 16 + 2 + 32;
const TABLE_LEN: usize = 16 + 2 + 3 * ENTRY_LEN;
/// Size of the table as QEMU writes it (padded to a multiple of 16).
pub const PADDED_LEN: usize = (TABLE_LEN + 15) & !15;

/// SHA-256 hashes of the three direct-boot inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelHashes {
    /// SHA-256 of the kernel file.
    pub kernel: [u8; 32],
    /// SHA-256 of the initrd (of nothing when there is none).
    pub initrd: [u8; 32],
    /// SHA-256 of the command line with its terminating NUL (just a NUL when empty).
    pub cmdline: [u8; 32],
}

impl KernelHashes {
    /// Hashes the inputs as QEMU does.
    pub fn new(kernel: &[u8], initrd: Option<&[u8]>, cmdline: Option<&str>) -> Self {
        let mut c = Sha256::new();
        c.update(cmdline.unwrap_or("").as_bytes());
        c.update([0u8]);
        KernelHashes {
            kernel: Sha256::digest(kernel).into(),
            initrd: Sha256::digest(initrd.unwrap_or(&[])).into(),
            cmdline: c.finalize().into(),
        }
    }

    /// Builds the hashes from already computed SHA-256 digests of the kernel and initrd.
    pub fn from_digests(kernel: [u8; 32], initrd: Option<[u8; 32]>, cmdline: Option<&str>) -> Self {
        let mut c = Sha256::new();
        c.update(cmdline.unwrap_or("").as_bytes());
        c.update([0u8]);
        KernelHashes {
            kernel,
            initrd: initrd.unwrap_or_else(|| Sha256::digest([]).into()),
            cmdline: c.finalize().into(),
        }
    }

    /// The padded table bytes.
    pub fn table(&self) -> [u8; PADDED_LEN] {
        let mut t = [0u8; PADDED_LEN];
        t[..16].copy_from_slice(&TABLE_GUID.0);
        t[16..18].copy_from_slice(&(TABLE_LEN as u16).to_le_bytes());
        for (i, (guid, hash)) in [
            (CMDLINE_GUID, &self.cmdline),
            (INITRD_GUID, &self.initrd),
            (KERNEL_GUID, &self.kernel),
        ]
        .into_iter()
        .enumerate()
        {
            let at = 18 + i * ENTRY_LEN;
            t[at..at + 16].copy_from_slice(&guid.0);
            t[at + 16..at + 18].copy_from_slice(&(ENTRY_LEN as u16).to_le_bytes());
            t[at + 18..at + 50].copy_from_slice(hash);
        }
        t
    }
}

//! OVMF's SEV metadata: the pages the SNP launch must import besides the image itself.

use super::OvmfError;
use crate::guid::Guid;

/// Footer-table GUID whose first u32 is the offset of the metadata from the end of the image.
pub const SEV_METADATA_GUID: Guid = Guid::new(
    0xdc886566,
    0x984a,
    0x4798,
    [0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc],
);
/// Footer-table GUID whose first u32 is the GPA the APs start at under SEV-ES/SNP.
pub const SEV_ES_RESET_BLOCK_GUID: Guid = Guid::new(
    0x00f771de,
    0x1a7e,
    0x4fcb,
    [0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e],
);
/// Footer-table GUID giving the GPA and size of the (SEV/SEV-ES) kernel-hashes table.
pub const SEV_HASH_TABLE_RV_GUID: Guid = Guid::new(
    0x7255371f,
    0x3a3b,
    0x4b04,
    [0x92, 0x7b, 0x1d, 0xa6, 0xef, 0xa8, 0xd4, 0x54],
);

/// Kind of a SEV metadata section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SevSectionType {
    /// Memory the firmware's SEC phase uses before it can validate pages (imported as ZERO).
    SecMem,
    /// The SNP secrets page.
    Secrets,
    /// The SNP CPUID page.
    Cpuid,
    /// The SVSM calling-area page (imported as ZERO).
    SvsmCaa,
    /// Where QEMU writes the kernel/initrd/cmdline hashes for measured direct boot.
    KernelHashes,
}

impl SevSectionType {
    fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Self::SecMem,
            2 => Self::Secrets,
            3 => Self::Cpuid,
            4 => Self::SvsmCaa,
            0x10 => Self::KernelHashes,
            _ => return None,
        })
    }

    /// The name OVMF's sources use.
    pub fn name(self) -> &'static str {
        match self {
            Self::SecMem => "SEC_MEM",
            Self::Secrets => "SECRETS",
            Self::Cpuid => "CPUID",
            Self::SvsmCaa => "SVSM_CAA",
            Self::KernelHashes => "KERNEL_HASHES",
        }
    }

    /// The raw type number in the metadata.
    pub fn raw(self) -> u32 {
        match self {
            Self::SecMem => 1,
            Self::Secrets => 2,
            Self::Cpuid => 3,
            Self::SvsmCaa => 4,
            Self::KernelHashes => 0x10,
        }
    }
}

/// One section: `size` bytes at `gpa`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SevSection {
    /// Guest-physical address (4 KiB aligned).
    pub gpa: u64,
    /// Size in bytes (multiple of 4 KiB).
    pub size: u64,
    /// What it holds.
    pub kind: SevSectionType,
}

const HEADER: usize = 16;
const ITEM: usize = 12;

/// Parses the "ASEV" metadata found `offset_from_end` bytes before the end of `image`.
pub fn parse(image: &[u8], offset_from_end: u32) -> Result<Vec<SevSection>, OvmfError> {
    let start = image
        .len()
        .checked_sub(offset_from_end as usize)
        .filter(|s| s + HEADER <= image.len())
        .ok_or(OvmfError::SevMetadata(format!(
            "offset {offset_from_end:#x} from the end points outside the image"
        )))?;
    let hdr = &image[start..start + HEADER];
    if &hdr[0..4] != b"ASEV" {
        return Err(OvmfError::SevMetadata(format!(
            "signature is {:02x?}, expected \"ASEV\"",
            &hdr[0..4]
        )));
    }
    let size = le32(hdr, 4) as usize;
    let version = le32(hdr, 8);
    let count = le32(hdr, 12) as usize;
    if version != 1 {
        return Err(OvmfError::SevMetadata(format!(
            "version {version}, only 1 is known"
        )));
    }
    let items_len = count
        .checked_mul(ITEM)
        .filter(|l| HEADER + l <= size && start + HEADER + l <= image.len())
        .ok_or(OvmfError::SevMetadata(format!(
            "{count} sections do not fit in the metadata ({size} bytes) or the image"
        )))?;
    let items = &image[start + HEADER..start + HEADER + items_len];
    let mut sections = Vec::with_capacity(count);
    for (i, item) in items.chunks_exact(ITEM).enumerate() {
        let gpa = u64::from(le32(item, 0));
        let size = u64::from(le32(item, 4));
        let raw = le32(item, 8);
        let kind = SevSectionType::from_raw(raw).ok_or(OvmfError::SevMetadata(format!(
            "section {i} has unknown type {raw:#x}"
        )))?;
        if gpa % 4096 != 0 || size % 4096 != 0 || size == 0 {
            return Err(OvmfError::SevMetadata(format!(
                "section {i} ({}) at {gpa:#x} size {size:#x} is not a whole number of aligned pages",
                kind.name()
            )));
        }
        sections.push(SevSection { gpa, size, kind });
    }
    Ok(sections)
}

pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

//! TDVF metadata: the sections a TDX launch adds to the TD and which of them it measures.

use super::OvmfError;
use super::sev::le32;
use crate::guid::Guid;

/// Footer-table GUID whose first u32 is the offset of the TDVF metadata from the end.
pub const TDVF_METADATA_GUID: Guid = Guid::new(
    0xe47a6535,
    0x984a,
    0x4798,
    [0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf, 0x8e, 0xc2],
);

/// Section attribute: the pages are measured into MRTD (MR.EXTEND).
pub const ATTR_MR_EXTEND: u32 = 1 << 0;
/// Section attribute: the pages are added later with PAGE.AUG.
pub const ATTR_PAGE_AUG: u32 = 1 << 1;

/// Kind of a TDVF section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TdvfSectionType {
    /// Boot firmware volume (code).
    Bfv,
    /// Configuration firmware volume (variables).
    Cfv,
    /// The TD HOB the VMM fills.
    TdHob,
    /// Temporary memory for the firmware's early phase.
    TempMem,
    /// Permanent memory, accepted later (not added at launch).
    PermMem,
    /// A payload (kernel) image.
    Payload,
    /// The payload's parameters.
    PayloadParam,
}

impl TdvfSectionType {
    fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            0 => Self::Bfv,
            1 => Self::Cfv,
            2 => Self::TdHob,
            3 => Self::TempMem,
            4 => Self::PermMem,
            5 => Self::Payload,
            6 => Self::PayloadParam,
            _ => return None,
        })
    }

    /// The name the TDVF specification uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bfv => "BFV",
            Self::Cfv => "CFV",
            Self::TdHob => "TD_HOB",
            Self::TempMem => "TEMP_MEM",
            Self::PermMem => "PERM_MEM",
            Self::Payload => "PAYLOAD",
            Self::PayloadParam => "PAYLOAD_PARAM",
        }
    }
}

/// One section of the TDVF metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TdvfSection {
    /// Offset of its data in the image.
    pub data_offset: u32,
    /// Bytes of data in the image (0 for memory-only sections).
    pub raw_size: u32,
    /// Guest-physical address.
    pub gpa: u64,
    /// Size in guest memory.
    pub size: u64,
    /// What it is.
    pub kind: TdvfSectionType,
    /// `ATTR_*` bits.
    pub attributes: u32,
}

impl TdvfSection {
    /// Whether its pages are measured into MRTD.
    pub fn measured(&self) -> bool {
        self.attributes & ATTR_MR_EXTEND != 0
    }
}

const HEADER: usize = 16;
const ITEM: usize = 32;

/// Parses the "TDVF" metadata found `offset_from_end` bytes before the end of `image`.
pub fn parse(image: &[u8], offset_from_end: u32) -> Result<Vec<TdvfSection>, OvmfError> {
    let bad = |m: String| OvmfError::TdvfMetadata(m);
    let start = image
        .len()
        .checked_sub(offset_from_end as usize)
        .filter(|s| s + HEADER <= image.len())
        .ok_or_else(|| {
            bad(format!(
                "offset {offset_from_end:#x} from the end points outside the image"
            ))
        })?;
    let hdr = &image[start..start + HEADER];
    if &hdr[0..4] != b"TDVF" {
        return Err(bad(format!(
            "signature is {:02x?}, expected \"TDVF\"",
            &hdr[0..4]
        )));
    }
    let length = le32(hdr, 4) as usize;
    let count = le32(hdr, 12) as usize;
    let items_len = count
        .checked_mul(ITEM)
        .filter(|l| HEADER + l <= length && start + HEADER + l <= image.len())
        .ok_or_else(|| {
            bad(format!(
                "{count} sections do not fit in the metadata ({length} bytes) or the image"
            ))
        })?;
    let mut sections = Vec::with_capacity(count);
    for (i, it) in image[start + HEADER..start + HEADER + items_len]
        .chunks_exact(ITEM)
        .enumerate()
    {
        let data_offset = le32(it, 0);
        let raw_size = le32(it, 4);
        let gpa = u64::from(le32(it, 8)) | (u64::from(le32(it, 12)) << 32);
        let size = u64::from(le32(it, 16)) | (u64::from(le32(it, 20)) << 32);
        let raw_type = le32(it, 24);
        let attributes = le32(it, 28);
        let kind = TdvfSectionType::from_raw(raw_type)
            .ok_or_else(|| bad(format!("section {i} has unknown type {raw_type}")))?;
        if gpa % 4096 != 0 || size % 4096 != 0 || size == 0 {
            return Err(bad(format!(
                "section {i} ({}) at {gpa:#x} size {size:#x} is not a whole number of aligned pages",
                kind.name()
            )));
        }
        if u64::from(raw_size) > size {
            return Err(bad(format!(
                "section {i} ({}) has {raw_size:#x} bytes of data for {size:#x} bytes of memory",
                kind.name()
            )));
        }
        if data_offset as usize + raw_size as usize > image.len() {
            return Err(bad(format!(
                "section {i} ({}) data {data_offset:#x}+{raw_size:#x} runs past the image",
                kind.name()
            )));
        }
        sections.push(TdvfSection {
            data_offset,
            raw_size,
            gpa,
            size,
            kind,
            attributes,
        });
    }
    Ok(sections)
}

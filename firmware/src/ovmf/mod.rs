//! OVMF images: a flat firmware image mapped to end at 4 GiB, with a GUIDed footer table that
//! points at the SEV metadata, the SEV-ES AP reset block and the TDVF metadata.

pub mod footer;
pub mod sev;
pub mod tdvf;

use std::sync::Arc;

use crate::guid::Guid;
use crate::plan::Blob;
pub use sev::{SevSection, SevSectionType};
pub use tdvf::{TdvfSection, TdvfSectionType};

/// The largest firmware image accepted (the 32-bit hole below 4 GiB is 1 GiB at most).
pub const MAX_IMAGE_SIZE: usize = 256 << 20;

/// What is wrong with an OVMF image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OvmfError {
    /// The image is empty, too large, or not a whole number of 4 KiB pages.
    #[error("image size {0:#x} is not a non-zero multiple of 4 KiB up to 256 MiB")]
    Size(usize),
    /// The footer table is malformed.
    #[error("footer GUID table: {0}")]
    FooterTable(&'static str),
    /// A footer-table entry is malformed.
    #[error("footer GUID table entry {guid}: size {size} does not fit (room {room})")]
    FooterEntry {
        /// The entry's GUID.
        guid: Guid,
        /// Its claimed size.
        size: usize,
        /// Bytes left in the table.
        room: usize,
    },
    /// A footer-table entry is shorter than the value it must hold.
    #[error("footer GUID table entry {0} is too short for its value")]
    ShortEntry(Guid),
    /// The image has no footer table, so no SEV or TDVF metadata.
    #[error("no OVMF footer GUID table (not an OVMF image for confidential guests)")]
    NoFooterTable,
    /// The SEV metadata is malformed.
    #[error("SEV metadata: {0}")]
    SevMetadata(String),
    /// The TDVF metadata is malformed.
    #[error("TDVF metadata: {0}")]
    TdvfMetadata(String),
}

/// A parsed OVMF image.
#[derive(Debug, Clone)]
pub struct Ovmf {
    image: Blob,
    table: Vec<footer::FooterEntry>,
    sev: Option<Vec<SevSection>>,
    tdvf: Option<Vec<TdvfSection>>,
}

impl Ovmf {
    /// Parses `image`; an image without a footer table is accepted (plain guests need none),
    /// and the confidential accessors then say what is missing.
    pub fn parse(image: Arc<[u8]>) -> Result<Self, OvmfError> {
        Self::parse_blob(Blob::from(image))
    }

    /// [`Ovmf::parse`] of bytes already in a [`Blob`] (a mapped file, say), without a copy.
    pub fn parse_blob(image: Blob) -> Result<Self, OvmfError> {
        let len = image.len();
        if len == 0 || len % 4096 != 0 || len > MAX_IMAGE_SIZE {
            return Err(OvmfError::Size(len));
        }
        let table = footer::parse(&image)?.unwrap_or_default();
        let mut ovmf = Ovmf {
            image,
            table,
            sev: None,
            tdvf: None,
        };
        if let Some(off) = ovmf.entry_u32(sev::SEV_METADATA_GUID)? {
            ovmf.sev = Some(sev::parse(&ovmf.image, off)?);
        }
        if let Some(off) = ovmf.entry_u32(tdvf::TDVF_METADATA_GUID)? {
            ovmf.tdvf = Some(tdvf::parse(&ovmf.image, off)?);
        }
        Ok(ovmf)
    }

    /// The image bytes.
    pub fn image(&self) -> &Blob {
        &self.image
    }

    /// GPA of the image's first byte: it ends at 4 GiB.
    pub fn gpa(&self) -> u64 {
        (1u64 << 32) - self.image.len() as u64
    }

    /// The footer table entries (empty when there is no table).
    pub fn footer_entries(&self) -> &[footer::FooterEntry] {
        &self.table
    }

    /// The first little-endian u32 of the footer entry `guid`, if the entry exists.
    pub fn entry_u32(&self, guid: Guid) -> Result<Option<u32>, OvmfError> {
        match self.table.iter().find(|e| e.guid == guid) {
            None => Ok(None),
            Some(e) if e.data.len() < 4 => Err(OvmfError::ShortEntry(guid)),
            Some(e) => Ok(Some(sev::le32(&e.data, 0))),
        }
    }

    /// The SEV metadata sections, or an error saying the image has none.
    pub fn sev_sections(&self) -> Result<&[SevSection], OvmfError> {
        match &self.sev {
            Some(s) => Ok(s),
            None if self.table.is_empty() => Err(OvmfError::NoFooterTable),
            None => Err(OvmfError::SevMetadata(
                "the image has no SEV metadata entry in its footer table".into(),
            )),
        }
    }

    /// The TDVF metadata sections, or an error saying the image has none.
    pub fn tdvf_sections(&self) -> Result<&[TdvfSection], OvmfError> {
        match &self.tdvf {
            Some(s) => Ok(s),
            None if self.table.is_empty() => Err(OvmfError::NoFooterTable),
            None => Err(OvmfError::TdvfMetadata(
                "the image has no TDVF metadata entry in its footer table".into(),
            )),
        }
    }

    /// The address APs start at under SEV-ES/SNP (the SEV-ES reset block), if the image has one.
    pub fn sev_es_reset_eip(&self) -> Result<Option<u32>, OvmfError> {
        self.entry_u32(sev::SEV_ES_RESET_BLOCK_GUID)
    }

    /// The SNP KERNEL_HASHES section, if the SEV metadata has one.
    pub fn kernel_hashes_section(&self) -> Option<SevSection> {
        self.sev
            .as_ref()?
            .iter()
            .find(|s| s.kind == SevSectionType::KernelHashes)
            .copied()
    }

    /// GPA of the kernel-hashes table inside its page, from the footer table (0 when absent).
    pub fn kernel_hashes_table_gpa(&self) -> Result<u32, OvmfError> {
        Ok(self.entry_u32(sev::SEV_HASH_TABLE_RV_GUID)?.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debian_ovmf() -> Option<Arc<[u8]>> {
        std::fs::read("/usr/share/ovmf/OVMF.fd").ok().map(Arc::from)
    }

    #[test]
    fn debian_ovmf_has_sev_and_tdvf_metadata() {
        let Some(img) = debian_ovmf() else {
            eprintln!("skipped: /usr/share/ovmf/OVMF.fd is not installed");
            return;
        };
        let o = Ovmf::parse(img).unwrap();
        let sev = o.sev_sections().unwrap();
        assert!(sev.iter().any(|s| s.kind == SevSectionType::Secrets));
        assert!(sev.iter().any(|s| s.kind == SevSectionType::Cpuid));
        let tdvf = o.tdvf_sections().unwrap();
        assert!(
            tdvf.iter()
                .any(|s| s.kind == TdvfSectionType::Bfv && s.measured())
        );
        assert!(o.sev_es_reset_eip().unwrap().is_some());
    }

    #[test]
    fn image_without_footer_table_has_no_metadata() {
        let o = Ovmf::parse(Arc::from(vec![0u8; 8192])).unwrap();
        assert_eq!(o.sev_sections().unwrap_err(), OvmfError::NoFooterTable);
        assert_eq!(o.tdvf_sections().unwrap_err(), OvmfError::NoFooterTable);
    }

    #[test]
    fn odd_sizes_are_rejected() {
        assert_eq!(
            Ovmf::parse(Arc::from(vec![0u8; 100])).unwrap_err(),
            OvmfError::Size(100)
        );
    }
}

//! The GUIDed footer table at the end of an OVMF image.
//!
//! The table ends 32 bytes before the end of the image with an entry whose GUID is
//! [`FOOTER_GUID`]; its size covers the whole table. Entries are laid out backwards: each is
//! `data, u16 size, GUID`, and `size` counts all three.

use super::OvmfError;
use crate::guid::Guid;

/// GUID of the entry that closes the table and gives its size.
pub const FOOTER_GUID: Guid = Guid::new(
    0x96b582de,
    0x1fb2,
    0x45f7,
    [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d],
);

const ENTRY_HEADER: usize = 18;

/// One entry: its GUID and the bytes in front of its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FooterEntry {
    /// What the entry is.
    pub guid: Guid,
    /// Its payload (often a little-endian u32 at the start).
    pub data: Vec<u8>,
}

/// Parses the footer table; `Ok(None)` when the image has no table at all.
pub fn parse(image: &[u8]) -> Result<Option<Vec<FooterEntry>>, OvmfError> {
    let Some(footer_at) = image.len().checked_sub(32 + ENTRY_HEADER) else {
        return Ok(None);
    };
    let (size, guid) = entry_header(image, footer_at);
    if guid != FOOTER_GUID {
        return Ok(None);
    }
    let table_size = usize::from(size)
        .checked_sub(ENTRY_HEADER)
        .ok_or(OvmfError::FooterTable(
            "table size is smaller than its header",
        ))?;
    let table_start = footer_at
        .checked_sub(table_size)
        .ok_or(OvmfError::FooterTable(
            "table size runs past the start of the image",
        ))?;
    let mut table = &image[table_start..footer_at];
    let mut entries = Vec::new();
    while table.len() >= ENTRY_HEADER {
        let at = table.len() - ENTRY_HEADER;
        let (size, guid) = entry_header(table, at);
        let size = usize::from(size);
        if size < ENTRY_HEADER || size > table.len() {
            return Err(OvmfError::FooterEntry {
                guid,
                size,
                room: table.len(),
            });
        }
        let data_start = table.len() - size;
        entries.push(FooterEntry {
            guid,
            data: table[data_start..at].to_vec(),
        });
        table = &table[..data_start];
    }
    Ok(Some(entries))
}

fn entry_header(bytes: &[u8], at: usize) -> (u16, Guid) {
    let size = u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let mut g = [0u8; 16];
    g.copy_from_slice(&bytes[at + 2..at + ENTRY_HEADER]);
    (size, Guid(g))
}

/// Encodes a footer table holding `entries` (the first ends up furthest from the end); place
/// the result so that it ends 32 bytes before the end of the image. For building test images.
pub fn encode(entries: &[FooterEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(&e.data);
        let size = u16::try_from(e.data.len() + ENTRY_HEADER).unwrap_or(u16::MAX);
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&e.guid.0);
    }
    let total = u16::try_from(out.len() + ENTRY_HEADER).unwrap_or(u16::MAX);
    out.extend_from_slice(&total.to_le_bytes());
    out.extend_from_slice(&FOOTER_GUID.0);
    out
}

//! Filling IGVM parameter areas from the VM configuration.

use igvm_defs::{IGVM_VHS_MEMORY_MAP_ENTRY, MemoryMapEntryType};
use zerocopy::IntoBytes;

use super::IgvmLoadError;
use crate::payload::VmConfig;
use crate::plan::{MemoryRange, PAGE_SIZE};

/// One parameter area as the loader fills it.
#[derive(Debug, Clone)]
pub struct Area {
    /// Its contents.
    pub bytes: Vec<u8>,
}

fn write_at(area: &mut Area, offset: u32, data: &[u8], what: &str) -> Result<(), IgvmLoadError> {
    let start = offset as usize;
    let end = start
        .checked_add(data.len())
        .filter(|e| *e <= area.bytes.len())
        .ok_or_else(|| {
            IgvmLoadError::Unsupported(format!(
                "{what} of {} bytes at offset {offset:#x} does not fit its parameter area of {} bytes",
                data.len(),
                area.bytes.len()
            ))
        })?;
    area.bytes[start..end].copy_from_slice(data);
    Ok(())
}

/// VP count: a u32.
pub fn vp_count(area: &mut Area, offset: u32, config: &VmConfig) -> Result<(), IgvmLoadError> {
    write_at(area, offset, &config.cpus.to_le_bytes(), "VP count")
}

/// Memory map: one entry per RAM range, then a zero entry.
pub fn memory_map(area: &mut Area, offset: u32, ram: &[MemoryRange]) -> Result<(), IgvmLoadError> {
    let mut bytes = Vec::new();
    for r in ram {
        let e = IGVM_VHS_MEMORY_MAP_ENTRY {
            starting_gpa_page_number: r.gpa / PAGE_SIZE,
            number_of_pages: r.size / PAGE_SIZE,
            entry_type: MemoryMapEntryType::MEMORY,
            flags: 0,
            reserved: 0,
        };
        bytes.extend_from_slice(e.as_bytes());
    }
    write_at(area, offset, &bytes, "memory map")
}

/// Command line: UTF-8 with a terminating NUL.
pub fn command_line(area: &mut Area, offset: u32, cmdline: &str) -> Result<(), IgvmLoadError> {
    let mut b = cmdline.as_bytes().to_vec();
    b.push(0);
    write_at(area, offset, &b, "command line")
}

/// Environment info: bit 0 says memory starts shared (plain guests).
pub fn environment_info(area: &mut Area, offset: u32, shared: bool) -> Result<(), IgvmLoadError> {
    write_at(
        area,
        offset,
        &u32::from(shared).to_le_bytes(),
        "environment info",
    )
}

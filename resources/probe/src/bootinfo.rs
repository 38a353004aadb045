//! What the loader told the probe: the memory map, the command line, the RSDP and the initrd,
//! from a PVH `hvm_start_info` or a Linux `boot_params` (zero page).

use crate::entry::{BOOT_LINUX, BOOT_PVH};
use crate::phys::{u8_at, u32_at, u64_at};

/// Most memory map entries kept (the zero page holds at most 128).
pub const MAX_REGIONS: usize = 128;
/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
const PVH_MAGIC: u32 = 0x336e_c578;

/// One memory map entry.
#[derive(Clone, Copy, Debug)]
pub struct Region {
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// e820 type (1 = RAM).
    pub kind: u32,
}

impl Region {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }
}

/// The parsed boot information.
#[derive(Clone, Copy)]
pub struct BootInfo {
    /// `BOOT_PVH` or `BOOT_LINUX`.
    pub proto: u32,
    /// Memory map entries, `regions[..nregions]`.
    pub regions: [Region; MAX_REGIONS],
    /// Number of valid entries in `regions`.
    pub nregions: usize,
    /// Physical address of the NUL-terminated command line, 0 if none.
    pub cmdline: u64,
    /// Physical address of the ACPI RSDP, 0 if the loader gave none.
    pub rsdp: u64,
    /// The initrd (first PVH module), `(start, len)`; len 0 if none.
    pub initrd: (u64, u64),
}

impl BootInfo {
    /// An empty record.
    pub const fn empty() -> Self {
        Self {
            proto: 0,
            regions: [Region {
                start: 0,
                len: 0,
                kind: 0,
            }; MAX_REGIONS],
            nregions: 0,
            cmdline: 0,
            rsdp: 0,
            initrd: (0, 0),
        }
    }

    /// The valid memory map entries.
    pub fn regions(&self) -> &[Region] {
        &self.regions[..self.nregions]
    }

    /// Total bytes of RAM (type 1) in the memory map.
    pub fn ram_bytes(&self) -> u64 {
        self.regions()
            .iter()
            .filter(|r| r.kind == E820_RAM)
            .map(|r| r.len)
            .sum()
    }

    /// One past the highest RAM byte.
    pub fn ram_top(&self) -> u64 {
        self.regions()
            .iter()
            .filter(|r| r.kind == E820_RAM)
            .map(|r| r.end())
            .max()
            .unwrap_or(0)
    }

    /// Whether `[start, end)` lies inside one RAM region.
    pub fn is_ram(&self, start: u64, end: u64) -> bool {
        self.regions()
            .iter()
            .any(|r| r.kind == E820_RAM && r.start <= start && end <= r.end())
    }

    fn push(&mut self, start: u64, len: u64, kind: u32) {
        if self.nregions < MAX_REGIONS && len > 0 {
            self.regions[self.nregions] = Region { start, len, kind };
            self.nregions += 1;
        }
    }
}

/// Parses the loader's boot information at `info` for boot protocol `proto` into `b`, which
/// must be empty (it is filled in place: copying it costs time at CPL0).
pub fn parse(b: &mut BootInfo, proto: u32, info: u64) -> Result<(), &'static str> {
    b.proto = proto;
    match proto {
        BOOT_PVH => parse_pvh(b, info)?,
        BOOT_LINUX => parse_linux(b, info)?,
        _ => return Err("unknown boot protocol"),
    }
    if b.nregions == 0 {
        return Err("the memory map is empty");
    }
    Ok(())
}

fn parse_pvh(b: &mut BootInfo, si: u64) -> Result<(), &'static str> {
    const BAD: &str = "hvm_start_info is out of reach";
    if u32_at(si, 0).ok_or(BAD)? != PVH_MAGIC {
        return Err("hvm_start_info has a bad magic");
    }
    let version = u32_at(si, 4).ok_or(BAD)?;
    let nr_modules = u32_at(si, 12).ok_or(BAD)?;
    let modlist = u64_at(si, 16).ok_or(BAD)?;
    b.cmdline = u64_at(si, 24).ok_or(BAD)?;
    b.rsdp = u64_at(si, 32).ok_or(BAD)?;
    if nr_modules > 0 {
        b.initrd = (
            u64_at(modlist, 0).ok_or(BAD)?,
            u64_at(modlist, 8).ok_or(BAD)?,
        );
    }
    if version < 1 {
        return Err("hvm_start_info version 0 has no memory map");
    }
    let map = u64_at(si, 40).ok_or(BAD)?;
    let entries = u32_at(si, 48).ok_or(BAD)?;
    for i in 0..u64::from(entries).min(MAX_REGIONS as u64) {
        let e = map + i * 24;
        let start = u64_at(e, 0).ok_or(BAD)?;
        let len = u64_at(e, 8).ok_or(BAD)?;
        let kind = u32_at(e, 16).ok_or(BAD)?;
        b.push(start, len, kind);
    }
    Ok(())
}

fn parse_linux(b: &mut BootInfo, bp: u64) -> Result<(), &'static str> {
    const BAD: &str = "boot_params is out of reach";
    if u32_at(bp, 0x202).ok_or(BAD)? != u32::from_le_bytes(*b"HdrS") {
        return Err("boot_params has no HdrS setup header");
    }
    b.rsdp = u64_at(bp, 0x70).ok_or(BAD)?;
    let cmd_lo = u32_at(bp, 0x228).ok_or(BAD)?;
    let cmd_hi = u32_at(bp, 0xc8).ok_or(BAD)?;
    b.cmdline = u64::from(cmd_lo) | (u64::from(cmd_hi) << 32);
    let rd_lo = u32_at(bp, 0x218).ok_or(BAD)?;
    let rd_len_lo = u32_at(bp, 0x21c).ok_or(BAD)?;
    let rd_hi = u32_at(bp, 0xc0).ok_or(BAD)?;
    let rd_len_hi = u32_at(bp, 0xc4).ok_or(BAD)?;
    b.initrd = (
        u64::from(rd_lo) | (u64::from(rd_hi) << 32),
        u64::from(rd_len_lo) | (u64::from(rd_len_hi) << 32),
    );
    let entries = u8_at(bp, 0x1e8).ok_or(BAD)?;
    for i in 0..u64::from(entries).min(MAX_REGIONS as u64) {
        let e = bp + 0x2d0 + i * 20;
        let start = u64_at(e, 0).ok_or(BAD)?;
        let len = u64_at(e, 8).ok_or(BAD)?;
        let kind = u32_at(e, 16).ok_or(BAD)?;
        b.push(start, len, kind);
    }
    Ok(())
}

/// Copies the NUL-terminated command line at `addr` into `buf`, returning its length; stops
/// at `buf.len()` bytes or at the end of the identity map.
pub fn copy_cmdline(addr: u64, buf: &mut [u8]) -> usize {
    if addr == 0 {
        return 0;
    }
    let mut n = 0;
    while n < buf.len() {
        match u8_at(addr, n as u64) {
            Some(0) | None => break,
            Some(c) => buf[n] = c,
        }
        n += 1;
    }
    n
}

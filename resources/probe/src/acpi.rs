//! Finding the CPUs: the ACPI MADT (RSDP from the loader or a BIOS-area scan), else the MP table.

use crate::bootinfo::BootInfo;
use crate::cpu::MAX_CPUS;
use crate::phys::{u8_at, u16_at, u32_at, u64_at};

/// The CPUs the firmware tables list.
pub struct Cpus {
    /// APIC ids of enabled CPUs, `ids[..count]`.
    pub ids: [u32; MAX_CPUS],
    /// Number of valid entries in `ids`.
    pub count: usize,
    /// Enabled CPUs listed beyond `MAX_CPUS`.
    pub dropped: usize,
    /// Which table they came from: "madt" or "mptable".
    pub source: &'static str,
}

impl Cpus {
    fn new(source: &'static str) -> Self {
        Self {
            ids: [0; MAX_CPUS],
            count: 0,
            dropped: 0,
            source,
        }
    }

    fn push(&mut self, id: u32) {
        if self.ids[..self.count].contains(&id) {
            return;
        }
        if self.count < MAX_CPUS {
            self.ids[self.count] = id;
            self.count += 1;
        } else {
            self.dropped += 1;
        }
    }

    /// The enabled CPUs' APIC ids.
    pub fn ids(&self) -> &[u32] {
        &self.ids[..self.count]
    }
}

fn checksum_ok(addr: u64, len: u64) -> bool {
    let mut sum = 0u8;
    for i in 0..len {
        match u8_at(addr, i) {
            Some(b) => sum = sum.wrapping_add(b),
            None => return false,
        }
    }
    sum == 0
}

fn signature(addr: u64, sig: &[u8]) -> bool {
    sig.iter()
        .enumerate()
        .all(|(i, &c)| u8_at(addr, i as u64) == Some(c))
}

/// Scans `[start, end)` on 16-byte boundaries for `sig` with a valid checksum over `len(addr)`.
fn scan(start: u64, end: u64, sig: &[u8], len: impl Fn(u64) -> u64) -> Option<u64> {
    (start..end)
        .step_by(16)
        .find(|&a| signature(a, sig) && checksum_ok(a, len(a)))
}

fn find_rsdp(boot: &BootInfo) -> Option<u64> {
    if boot.rsdp != 0 && signature(boot.rsdp, b"RSD PTR ") {
        return Some(boot.rsdp);
    }
    scan(0xe_0000, 0x10_0000, b"RSD PTR ", |_| 20)
}

/// Finds an ACPI table by signature through the XSDT (or RSDT).
fn find_table(rsdp: u64, sig: &[u8; 4]) -> Option<u64> {
    let revision = u8_at(rsdp, 15)?;
    let (root, entry_size) = match u64_at(rsdp, 24) {
        Some(x) if revision >= 2 && x != 0 => (x, 8),
        _ => (u64::from(u32_at(rsdp, 16)?), 4),
    };
    let len = u64::from(u32_at(root, 4)?);
    let entries = len.checked_sub(36)? / entry_size;
    for i in 0..entries.min(1024) {
        let table = if entry_size == 8 {
            u64_at(root, 36 + i * 8)?
        } else {
            u64::from(u32_at(root, 36 + i * 4)?)
        };
        if signature(table, sig) {
            return Some(table);
        }
    }
    None
}

fn from_madt(boot: &BootInfo) -> Option<Cpus> {
    let madt = find_table(find_rsdp(boot)?, b"APIC")?;
    let len = u64::from(u32_at(madt, 4)?);
    let mut cpus = Cpus::new("madt");
    let mut off = 44;
    while off + 2 <= len {
        let kind = u8_at(madt, off)?;
        let elen = u64::from(u8_at(madt, off + 1)?);
        if elen < 2 {
            break;
        }
        match kind {
            0 if elen >= 8 && u32_at(madt, off + 4)? & 1 != 0 => {
                cpus.push(u32::from(u8_at(madt, off + 3)?));
            }
            9 if elen >= 16 && u32_at(madt, off + 8)? & 1 != 0 => cpus.push(u32_at(madt, off + 4)?),
            _ => {}
        }
        off += elen;
    }
    (cpus.count > 0).then_some(cpus)
}

fn from_mptable() -> Option<Cpus> {
    let fp = scan(0x9_fc00, 0xa_0000, b"_MP_", |_| 16)
        .or_else(|| scan(0xf_0000, 0x10_0000, b"_MP_", |_| 16))?;
    let table = u64::from(u32_at(fp, 4)?);
    if !signature(table, b"PCMP") || !checksum_ok(table, u64::from(u16_at(table, 4)?)) {
        return None;
    }
    let count = u16_at(table, 34)?;
    let mut cpus = Cpus::new("mptable");
    let mut off = 44;
    for _ in 0..count {
        match u8_at(table, off)? {
            0 => {
                if u8_at(table, off + 3)? & 1 != 0 {
                    cpus.push(u32::from(u8_at(table, off + 1)?));
                }
                off += 20;
            }
            _ => off += 8,
        }
    }
    (cpus.count > 0).then_some(cpus)
}

/// The enabled CPUs from the MADT, else from the MP table; `None` if neither lists any.
pub fn find_cpus(boot: &BootInfo) -> Option<Cpus> {
    from_madt(boot).or_else(from_mptable)
}

//! The Intel MultiProcessor Specification 1.4 table: a floating pointer at the start of the EBDA
//! (`0x9fc00`) and the configuration table right after it, listing every CPU, the ISA bus, the
//! IOAPIC, the identity routing of ISA IRQs 0-15 to IOAPIC pins 0-15 and LINT1 as NMI (there is
//! no 8259 PIC, so no ExtINT entry). When the table does not
//! fit in the 1 KiB EBDA (more than ~40 CPUs) it goes to `0xf0000` in the reserved BIOS area,
//! where guests also look for it.

use crate::memory::EBDA_START;

/// Where the configuration table goes when the EBDA is too small for it.
pub const FALLBACK_TABLE_ADDR: u64 = 0xf_0000;
/// The local APIC's MMIO address.
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// The IOAPIC's MMIO address.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
const EBDA_LEN: usize = 1024;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const ISA_IRQS: u8 = 16;

/// Sum of bytes, for the checksum fields (the whole structure must sum to zero).
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// The MP structures to write: `(address, bytes)` pairs (one or two).
pub fn build(cpus: u8) -> Vec<(u64, Vec<u8>)> {
    let table_len = 44 + 20 * usize::from(cpus) + 8 + 8 + 8 * usize::from(ISA_IRQS) + 8;
    let in_ebda = 16 + table_len <= EBDA_LEN;
    let table_addr = if in_ebda {
        EBDA_START + 16
    } else {
        FALLBACK_TABLE_ADDR
    };
    let table = config_table(cpus);
    debug_assert_eq!(table.len(), table_len);

    let mut fp = Vec::with_capacity(16);
    fp.extend_from_slice(b"_MP_");
    fp.extend_from_slice(&(table_addr as u32).to_le_bytes());
    fp.push(1); // length in 16-byte units
    fp.push(4); // spec revision 1.4
    fp.push(0); // checksum, below
    fp.extend_from_slice(&[0; 5]); // feature bytes: 0 = a configuration table is present
    fp[10] = checksum(&fp);

    if in_ebda {
        fp.extend_from_slice(&table);
        vec![(EBDA_START, fp)]
    } else {
        vec![(EBDA_START, fp), (FALLBACK_TABLE_ADDR, table)]
    }
}

fn config_table(cpus: u8) -> Vec<u8> {
    let ioapic_id = cpus; // the first id after the CPUs'
    let mut entries = Vec::new();
    for id in 0..cpus {
        entries.push(0u8); // processor
        entries.push(id);
        entries.push(APIC_VERSION);
        entries.push(if id == 0 { 0x3 } else { 0x1 }); // enabled, BSP
        entries.extend_from_slice(&0x600u32.to_le_bytes()); // family 6 signature
        entries.extend_from_slice(&0x201u32.to_le_bytes()); // FPU and APIC feature flags
        entries.extend_from_slice(&[0; 8]);
    }
    entries.extend_from_slice(&[1, 0]); // bus 0
    entries.extend_from_slice(b"ISA   ");
    entries.extend_from_slice(&[2, ioapic_id, IOAPIC_VERSION, 1]); // IOAPIC, enabled
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    for irq in 0..ISA_IRQS {
        // I/O interrupt: INT, polarity and trigger conform to the bus, bus 0 irq -> pin irq.
        entries.extend_from_slice(&[3, 0, 0, 0, 0, irq, ioapic_id, irq]);
    }
    // Local interrupt to every LAPIC (0xff): NMI on LINT1.
    entries.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0xff, 1]);
    let count = u16::from(cpus) + 2 + u16::from(ISA_IRQS) + 1;

    let mut t = Vec::with_capacity(44 + entries.len());
    t.extend_from_slice(b"PCMP");
    t.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    t.push(4); // spec revision
    t.push(0); // checksum, below
    t.extend_from_slice(b"VEIL    ");
    t.extend_from_slice(b"VEIL VMM    ");
    t.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    t.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    t.extend_from_slice(&count.to_le_bytes());
    t.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    t.extend_from_slice(&0u16.to_le_bytes()); // extended table length
    t.push(0); // extended table checksum
    t.push(0);
    t.extend_from_slice(&entries);
    t[7] = checksum(&t);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    /// Parses the structures the way a guest does and returns the APIC ids of enabled CPUs.
    fn cpus_seen(parts: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let at = |addr: u64, len: usize| -> &[u8] {
            for (base, bytes) in parts {
                if addr >= *base && addr + len as u64 <= base + bytes.len() as u64 {
                    let off = (addr - base) as usize;
                    return &bytes[off..off + len];
                }
            }
            panic!("{addr:#x}+{len} not written");
        };
        let fp = at(EBDA_START, 16);
        assert_eq!(&fp[..4], b"_MP_");
        assert_eq!(sum(fp), 0);
        let table_addr = u64::from(u32::from_le_bytes(fp[4..8].try_into().unwrap()));
        let hdr = at(table_addr, 44);
        assert_eq!(&hdr[..4], b"PCMP");
        let len = usize::from(u16::from_le_bytes([hdr[4], hdr[5]]));
        let table = at(table_addr, len);
        assert_eq!(sum(table), 0);
        let count = u16::from_le_bytes([hdr[34], hdr[35]]);
        let mut off = 44;
        let mut ids = vec![];
        for _ in 0..count {
            match table[off] {
                0 => {
                    if table[off + 3] & 1 == 1 {
                        ids.push(table[off + 1]);
                    }
                    off += 20;
                }
                1..=4 => off += 8,
                t => panic!("entry type {t}"),
            }
        }
        assert_eq!(off, len);
        ids
    }

    #[test]
    fn lists_every_cpu_in_the_ebda() {
        let parts = build(4);
        assert_eq!(parts.len(), 1);
        assert!(parts[0].1.len() <= EBDA_LEN);
        assert_eq!(cpus_seen(&parts), vec![0, 1, 2, 3]);
    }

    #[test]
    fn large_tables_move_out_of_the_ebda() {
        let parts = build(200);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].0, FALLBACK_TABLE_ADDR);
        assert_eq!(cpus_seen(&parts), (0..200).collect::<Vec<u8>>());
    }
}

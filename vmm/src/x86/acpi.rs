//! ACPI tables: RSDP at `0xe0000` (reserved BIOS area), then XSDT, RSDT, FADT, DSDT and MADT in
//! the same area. The FADT is hardware-reduced (Veil has no PM1 blocks, GPEs, SCI or PM timer),
//! with a reset register at I/O port `0x64` value `0xfe` (the i8042 reset) and sleep control and
//! status registers at I/O ports `0x600`/`0x601`. The DSDT holds only `_S5_` (the SLP_TYP value
//! for soft-off, so guests can power off): the devices Veil has so far sit at legacy ISA
//! addresses that guests probe on their own. The MADT lists one local APIC per vCPU, the IOAPIC
//! and LINT1 as NMI.

use super::mptable::{IOAPIC_ADDR, LAPIC_ADDR, checksum};

/// Guest-physical address of the RSDP.
pub const RSDP_ADDR: u64 = 0xe_0000;
const OEM_ID: &[u8; 6] = b"VEIL  ";
const OEM_TABLE_ID: &[u8; 8] = b"VEILVMM ";
const HEADER_LEN: usize = 36;
const FADT_LEN: usize = 276;
const FADT_HW_REDUCED: u32 = 1 << 20;
const FADT_RESET_REG_SUP: u32 = 1 << 10;
/// I/O ports of the sleep control and status registers.
const SLEEP_CONTROL_PORT: u64 = 0x600;
const SLEEP_STATUS_PORT: u64 = 0x601;
/// AML: `Name (_S5_, Package (4) { 5, 0, 0, 0 })`, SLP_TYP 5 for soft-off.
const AML_S5: [u8; 13] = [
    0x08, b'_', b'S', b'5', b'_', 0x12, 0x07, 0x04, 0x0a, 0x05, 0x00, 0x00, 0x00,
];
/// IA-PC boot architecture flags: 8042 present, VGA not present.
const IAPC_BOOT_ARCH: u16 = (1 << 1) | (1 << 2);

/// A standard 36-byte table header followed by `body`, with length and checksum filled in.
fn table(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(HEADER_LEN + body.len());
    t.extend_from_slice(signature);
    t.extend_from_slice(&((HEADER_LEN + body.len()) as u32).to_le_bytes());
    t.push(revision);
    t.push(0); // checksum
    t.extend_from_slice(OEM_ID);
    t.extend_from_slice(OEM_TABLE_ID);
    t.extend_from_slice(&1u32.to_le_bytes()); // OEM revision
    t.extend_from_slice(b"VEIL"); // creator id
    t.extend_from_slice(&1u32.to_le_bytes()); // creator revision
    t.extend_from_slice(body);
    t[9] = checksum(&t);
    t
}

fn madt(cpus: u8) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // flags: no PCAT_COMPAT, there is no 8259 PIC
    for id in 0..cpus {
        b.extend_from_slice(&[0, 8, id, id]); // processor local APIC: uid, APIC id
        b.extend_from_slice(&1u32.to_le_bytes()); // enabled
    }
    b.extend_from_slice(&[1, 12, cpus, 0]); // IOAPIC: id after the CPUs'
    b.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // GSI base
    b.extend_from_slice(&[4, 6, 0xff, 0, 0, 1]); // local APIC NMI: all processors, LINT1
    table(b"APIC", 4, &b)
}

fn fadt(dsdt: u64) -> Vec<u8> {
    let mut b = vec![0u8; FADT_LEN - HEADER_LEN];
    let at = |off: usize| off - HEADER_LEN;
    b[at(40)..at(44)].copy_from_slice(&(dsdt as u32).to_le_bytes());
    b[at(109)..at(111)].copy_from_slice(&IAPC_BOOT_ARCH.to_le_bytes());
    b[at(112)..at(116)].copy_from_slice(&(FADT_HW_REDUCED | FADT_RESET_REG_SUP).to_le_bytes());
    // RESET_REG: generic address, system I/O space, 8 bits, byte access, port 0x64.
    b[at(116)..at(120)].copy_from_slice(&[1, 8, 0, 1]);
    b[at(120)..at(128)].copy_from_slice(&0x64u64.to_le_bytes());
    b[at(128)] = 0xfe; // RESET_VALUE
    b[at(131)] = 0; // FADT minor version (6.0)
    b[at(140)..at(148)].copy_from_slice(&dsdt.to_le_bytes());
    // SLEEP_CONTROL_REG and SLEEP_STATUS_REG: system I/O, 8 bits, byte access.
    for (off, port) in [(244, SLEEP_CONTROL_PORT), (256, SLEEP_STATUS_PORT)] {
        b[at(off)..at(off + 4)].copy_from_slice(&[1, 8, 0, 1]);
        b[at(off + 4)..at(off + 12)].copy_from_slice(&port.to_le_bytes());
    }
    b[at(268)..at(276)].copy_from_slice(&u64::from_le_bytes(*b"VEILVMM\0").to_le_bytes());
    table(b"FACP", 6, &b)
}

fn align16(n: usize) -> usize {
    (n + 15) & !15
}

/// All tables as one blob to write at [`RSDP_ADDR`].
pub fn build(cpus: u8) -> Vec<u8> {
    // Offsets from RSDP_ADDR; each table 16-byte aligned.
    let xsdt_off = 64;
    let xsdt_len = HEADER_LEN + 8 * 2;
    let rsdt_off = align16(xsdt_off + xsdt_len);
    let rsdt_len = HEADER_LEN + 4 * 2;
    let fadt_off = align16(rsdt_off + rsdt_len);
    let dsdt_off = align16(fadt_off + FADT_LEN);
    let madt_off = align16(dsdt_off + HEADER_LEN + AML_S5.len());
    let addr = |off: usize| RSDP_ADDR + off as u64;

    let dsdt = table(b"DSDT", 2, &AML_S5);
    let fadt = fadt(addr(dsdt_off));
    let madt = madt(cpus);
    let mut x = Vec::new();
    let mut r = Vec::new();
    for off in [fadt_off, madt_off] {
        x.extend_from_slice(&addr(off).to_le_bytes());
        r.extend_from_slice(&(addr(off) as u32).to_le_bytes());
    }
    let xsdt = table(b"XSDT", 1, &x);
    let rsdt = table(b"RSDT", 1, &r);

    let mut rsdp = Vec::with_capacity(36);
    rsdp.extend_from_slice(b"RSD PTR ");
    rsdp.push(0); // checksum of the first 20 bytes
    rsdp.extend_from_slice(OEM_ID);
    rsdp.push(2); // revision: ACPI 2.0+ (has the XSDT)
    rsdp.extend_from_slice(&(addr(rsdt_off) as u32).to_le_bytes());
    rsdp.extend_from_slice(&36u32.to_le_bytes());
    rsdp.extend_from_slice(&addr(xsdt_off).to_le_bytes());
    rsdp.extend_from_slice(&[0; 4]); // extended checksum, reserved
    rsdp[8] = checksum(&rsdp[..20]);
    rsdp[32] = checksum(&rsdp);

    let mut blob = vec![0u8; madt_off + madt.len()];
    for (off, t) in [
        (0, &rsdp),
        (xsdt_off, &xsdt),
        (rsdt_off, &rsdt),
        (fadt_off, &fadt),
        (dsdt_off, &dsdt),
        (madt_off, &madt),
    ] {
        blob[off..off + t.len()].copy_from_slice(t);
    }
    blob
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }
    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }

    /// Reads a table at a guest address out of the blob, checking length and checksum.
    fn table_at(blob: &[u8], addr: u64) -> &[u8] {
        let off = (addr - RSDP_ADDR) as usize;
        let len = u32_at(blob, off + 4) as usize;
        let t = &blob[off..off + len];
        assert_eq!(sum(t), 0, "checksum of {:?}", std::str::from_utf8(&t[..4]));
        t
    }

    #[test]
    fn a_guest_finds_every_cpu_through_the_rsdp() {
        let blob = build(3);
        assert_eq!(&blob[..8], b"RSD PTR ");
        assert_eq!(sum(&blob[..20]), 0);
        assert_eq!(sum(&blob[..36]), 0);
        let xsdt = table_at(&blob, u64_at(&blob, 24));
        assert_eq!(&xsdt[..4], b"XSDT");
        let rsdt = table_at(&blob, u64::from(u32_at(&blob, 16)));
        assert_eq!(&rsdt[..4], b"RSDT");
        let mut sigs = vec![];
        let mut ids = vec![];
        for i in 0..(xsdt.len() - 36) / 8 {
            let addr = u64_at(xsdt, 36 + 8 * i);
            assert_eq!(u64::from(u32_at(rsdt, 36 + 4 * i)), addr);
            let t = table_at(&blob, addr);
            sigs.push(t[..4].to_vec());
            if &t[..4] == b"APIC" {
                assert_eq!(u32_at(t, 36), LAPIC_ADDR);
                let mut off = 44;
                while off < t.len() {
                    if t[off] == 0 && u32_at(t, off + 4) & 1 == 1 {
                        ids.push(t[off + 3]);
                    }
                    if t[off] == 1 {
                        assert_eq!(u32_at(t, off + 4), IOAPIC_ADDR);
                    }
                    off += usize::from(t[off + 1]);
                }
                assert_eq!(off, t.len());
            }
            if &t[..4] == b"FACP" {
                assert_eq!(t.len(), FADT_LEN);
                let dsdt = table_at(&blob, u64_at(t, 140));
                assert_eq!(&dsdt[..4], b"DSDT");
                assert_eq!(&dsdt[36..], &AML_S5);
                assert_eq!(u64_at(t, 248), SLEEP_CONTROL_PORT);
                assert_eq!(u64::from(u32_at(t, 40)), u64_at(t, 140));
                assert_ne!(u32_at(t, 112) & FADT_HW_REDUCED, 0);
            }
        }
        assert_eq!(sigs, vec![b"FACP".to_vec(), b"APIC".to_vec()]);
        assert_eq!(ids, vec![0, 1, 2]);
    }

    #[test]
    fn the_largest_machine_fits_below_1_mib() {
        assert!(RSDP_ADDR + build(254).len() as u64 <= 0x10_0000);
    }
}

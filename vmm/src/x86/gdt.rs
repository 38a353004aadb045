//! The boot GDT (at `0x500`) and the segment registers loaded from it.
//!
//! Selectors: `0x08` flat 32-bit code (PVH entry), `0x10` flat 64-bit code (`__BOOT_CS` of the
//! Linux boot protocol), `0x18` flat data (`__BOOT_DS`). The IDT at `0x520` is empty (limit 0):
//! kernels install their own before enabling interrupts.

use kvm_bindings::kvm_segment;

/// Guest-physical address of the GDT.
pub const GDT_ADDR: u64 = 0x500;
/// Guest-physical address of the (empty) IDT.
pub const IDT_ADDR: u64 = 0x520;
/// Selector of the flat 32-bit code segment.
pub const CODE32_SELECTOR: u16 = 0x08;
/// Selector of the flat 64-bit code segment.
pub const CODE64_SELECTOR: u16 = 0x10;
/// Selector of the flat data segment.
pub const DATA_SELECTOR: u16 = 0x18;

/// Access/flags words (bits 8..16 access byte, 16..20 unused here, 20..24 flags) of each entry.
const CODE32_FLAGS: u16 = 0xc09b; // G, D/B, present, code, exec/read, accessed
const CODE64_FLAGS: u16 = 0xa09b; // G, L, present, code, exec/read, accessed
const DATA_FLAGS: u16 = 0xc093; // G, D/B, present, data, read/write, accessed

/// Encodes one segment descriptor from its flags word, base and limit.
pub fn descriptor(flags: u16, base: u32, limit: u32) -> u64 {
    let base = u64::from(base);
    let limit = u64::from(limit);
    let flags = u64::from(flags);
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0xffff)
}

/// The four GDT entries: null, code32, code64, data.
pub fn table() -> [u64; 4] {
    [
        0,
        descriptor(CODE32_FLAGS, 0, 0xf_ffff),
        descriptor(CODE64_FLAGS, 0, 0xf_ffff),
        descriptor(DATA_FLAGS, 0, 0xf_ffff),
    ]
}

/// The GDT as bytes, to write at [`GDT_ADDR`].
pub fn table_bytes() -> [u8; 32] {
    let mut out = [0u8; 32];
    for (chunk, d) in out.chunks_exact_mut(8).zip(table()) {
        chunk.copy_from_slice(&d.to_le_bytes());
    }
    out
}

/// The KVM view of the segment that `selector` loads from [`table`].
pub fn segment(selector: u16) -> kvm_segment {
    let d = table()[usize::from(selector >> 3) & 3];
    let limit = ((d & 0xffff) | ((d >> 32) & 0xf_0000)) as u32;
    let g = ((d >> 55) & 1) as u8;
    kvm_segment {
        base: ((d >> 16) & 0xff_ffff) | (((d >> 56) & 0xff) << 24),
        // With 4 KiB granularity the limit covers whole pages.
        limit: if g == 1 { (limit << 12) | 0xfff } else { limit },
        selector,
        type_: ((d >> 40) & 0xf) as u8,
        present: ((d >> 47) & 1) as u8,
        dpl: ((d >> 45) & 3) as u8,
        db: ((d >> 54) & 1) as u8,
        s: ((d >> 44) & 1) as u8,
        l: ((d >> 53) & 1) as u8,
        g,
        avl: ((d >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_match_the_architecture() {
        // Well-known encodings of flat segments.
        assert_eq!(table()[1], 0x00cf_9b00_0000_ffff);
        assert_eq!(table()[2], 0x00af_9b00_0000_ffff);
        assert_eq!(table()[3], 0x00cf_9300_0000_ffff);
    }

    #[test]
    fn segments_decode_back() {
        let cs = segment(CODE64_SELECTOR);
        assert_eq!((cs.l, cs.db, cs.type_, cs.s, cs.present), (1, 0, 0xb, 1, 1));
        assert_eq!((cs.base, cs.limit, cs.g), (0, 0xffff_ffff, 1));
        let cs32 = segment(CODE32_SELECTOR);
        assert_eq!((cs32.l, cs32.db), (0, 1));
        let ds = segment(DATA_SELECTOR);
        assert_eq!((ds.type_, ds.selector, ds.db), (3, 0x18, 1));
        assert_eq!(table_bytes()[8..16], 0x00cf_9b00_0000_ffffu64.to_le_bytes());
    }
}

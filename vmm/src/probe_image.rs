//! The probe guest, built from `resources/probe` by `vmm/build.rs` and embedded in `veil`.
//!
//! `veil run` with no payload boots it; integration tests and benchmarks boot it to check and
//! measure the machine Veil presents. Its behaviour and output are specified in docs/probe.md.

/// The probe as an ELF64 image linked at 1 MiB: a PVH note (`XEN_ELFNOTE_PHYS32_ENTRY`, the
/// 32-bit entry) and `e_entry` = the 64-bit Linux boot protocol entry (`RSI` = `boot_params`).
pub static PROBE_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/probe.elf"));

/// The same probe as a bzImage (boot protocol 2.12, `XLF_KERNEL_64`, loaded at 1 MiB, 64-bit entry
/// at load address + 0x200); it has no real-mode setup code, so it needs a 64-bit loader.
pub static PROBE_BZIMAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/probe.bzImage"));

#[cfg(test)]
mod tests {
    use super::{PROBE_BZIMAGE, PROBE_ELF};

    fn u16_at(b: &[u8], off: usize) -> u16 {
        u16::from_le_bytes(b[off..off + 2].try_into().expect("2 bytes"))
    }
    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
    }
    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
    }

    /// `(p_type, p_offset, p_paddr, p_filesz, p_memsz)` of every program header.
    fn phdrs(elf: &[u8]) -> Vec<(u32, usize, u64, usize, u64)> {
        let phoff = u64_at(elf, 0x20) as usize;
        let size = usize::from(u16_at(elf, 0x36));
        (0..usize::from(u16_at(elf, 0x38)))
            .map(|i| {
                let p = phoff + i * size;
                (
                    u32_at(elf, p),
                    u64_at(elf, p + 8) as usize,
                    u64_at(elf, p + 0x18),
                    u64_at(elf, p + 0x20) as usize,
                    u64_at(elf, p + 0x28),
                )
            })
            .collect()
    }

    #[test]
    fn elf_has_one_load_at_1mib_a_pvh_note_and_entries_that_write_port_0x80() {
        assert_eq!(&PROBE_ELF[..5], b"\x7fELF\x02", "ELF64");
        assert_eq!(u16_at(PROBE_ELF, 0x12), 0x3e, "x86_64");
        let entry = u64_at(PROBE_ELF, 0x18);
        assert_eq!(entry, 0x10_0200);
        let ph = phdrs(PROBE_ELF);
        let loads: Vec<_> = ph.iter().filter(|p| p.0 == 1).collect();
        assert_eq!(loads.len(), 1, "exactly one PT_LOAD");
        let (_, off, paddr, filesz, memsz) = *loads[0];
        assert_eq!(paddr, 0x10_0000);
        assert!(memsz >= filesz as u64);
        let image = &PROBE_ELF[off..off + filesz];
        // `out 0x80, al` first, at both entries.
        assert_eq!(&image[..2], &[0xe6, 0x80], "PVH entry");
        assert_eq!(&image[0x200..0x202], &[0xe6, 0x80], "64-bit entry");

        let note = ph.iter().find(|p| p.0 == 4).expect("a PT_NOTE");
        let n = &PROBE_ELF[note.1..note.1 + note.3];
        assert_eq!((u32_at(n, 0), u32_at(n, 4), u32_at(n, 8)), (4, 4, 18));
        assert_eq!(&n[12..16], b"Xen\0");
        assert_eq!(u32_at(n, 16), 0x10_0000, "XEN_ELFNOTE_PHYS32_ENTRY");
    }

    #[test]
    fn bzimage_has_a_64_bit_setup_header_and_carries_the_elf_image() {
        let b = PROBE_BZIMAGE;
        assert_eq!(u16_at(b, 0x1fe), 0xaa55);
        assert_eq!(&b[0x202..0x206], b"HdrS");
        assert!(u16_at(b, 0x206) >= 0x020c, "protocol 2.12 or later");
        assert_eq!(b[0x211] & 1, 1, "LOADED_HIGH");
        assert_eq!(u16_at(b, 0x236) & 1, 1, "XLF_KERNEL_64");
        assert_eq!(u32_at(b, 0x214), 0x10_0000, "code32_start");
        assert_eq!(u64_at(b, 0x258), 0x10_0000, "pref_address");
        let setup = (usize::from(b[0x1f1]) + 1) * 512;
        let kernel = &b[setup..];
        assert_eq!(
            u32_at(b, 0x1f4) as usize,
            kernel.len().div_ceil(16),
            "syssize"
        );

        let (_, off, _, filesz, memsz) =
            *phdrs(PROBE_ELF).iter().find(|p| p.0 == 1).expect("PT_LOAD");
        assert_eq!(
            kernel,
            &PROBE_ELF[off..off + filesz],
            "same image as the ELF"
        );
        assert_eq!(
            u64::from(u32_at(b, 0x260)),
            memsz.next_multiple_of(4096),
            "init_size"
        );
    }
}

//! Synthetic OVMF-format images for tests: the footer GUID table and SEV metadata exactly as
//! OVMF lays them out, around deterministic filler bytes. Debian's OVMF has no SNP
//! KERNEL_HASHES section, so measured direct boot is tested on an image built here.

/// A SEV metadata section: (gpa, size, type) with OVMF's type numbers (1 SEC_MEM, 2 SECRETS,
/// 3 CPUID, 0x10 KERNEL_HASHES).
pub type SevSection = (u32, u32, u32);

fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> [u8; 16] {
    let mut g = [0u8; 16];
    g[..4].copy_from_slice(&d1.to_le_bytes());
    g[4..6].copy_from_slice(&d2.to_le_bytes());
    g[6..8].copy_from_slice(&d3.to_le_bytes());
    g[8..].copy_from_slice(&d4);
    g
}

/// Builds a `size`-byte image whose footer table points at SEV metadata with `sections`, an
/// SEV-ES reset block at `reset_eip` and, if given, a kernel-hashes table at `hashes_gpa`.
pub fn build(
    size: usize,
    sections: &[SevSection],
    reset_eip: u32,
    hashes_gpa: Option<u32>,
) -> Vec<u8> {
    let mut img: Vec<u8> = (0..size)
        .map(|i| ((i * 7 + i / 4096) % 251) as u8)
        .collect();
    // SEV metadata 0x1000 bytes before the end.
    let meta_off = 0x1000usize;
    let meta_at = size - meta_off;
    let mut meta = Vec::new();
    meta.extend_from_slice(b"ASEV");
    meta.extend_from_slice(&((16 + 12 * sections.len()) as u32).to_le_bytes());
    meta.extend_from_slice(&1u32.to_le_bytes());
    meta.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    for (gpa, sz, ty) in sections {
        meta.extend_from_slice(&gpa.to_le_bytes());
        meta.extend_from_slice(&sz.to_le_bytes());
        meta.extend_from_slice(&ty.to_le_bytes());
    }
    img[meta_at..meta_at + meta.len()].copy_from_slice(&meta);
    // Footer table entries: data, u16 size, GUID; the closing entry sits 32 bytes before the end.
    let mut entries: Vec<([u8; 16], Vec<u8>)> = vec![
        (
            guid(
                0xdc886566,
                0x984a,
                0x4798,
                [0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc],
            ),
            (meta_off as u32).to_le_bytes().to_vec(),
        ),
        (
            guid(
                0x00f771de,
                0x1a7e,
                0x4fcb,
                [0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e],
            ),
            reset_eip.to_le_bytes().to_vec(),
        ),
    ];
    if let Some(h) = hashes_gpa {
        let mut d = h.to_le_bytes().to_vec();
        d.extend_from_slice(&0x400u32.to_le_bytes());
        entries.push((
            guid(
                0x7255371f,
                0x3a3b,
                0x4b04,
                [0x92, 0x7b, 0x1d, 0xa6, 0xef, 0xa8, 0xd4, 0x54],
            ),
            d,
        ));
    }
    let mut table = Vec::new();
    for (g, d) in &entries {
        table.extend_from_slice(d);
        table.extend_from_slice(&((d.len() + 18) as u16).to_le_bytes());
        table.extend_from_slice(g);
    }
    table.extend_from_slice(&((table.len() + 18) as u16).to_le_bytes());
    table.extend_from_slice(&guid(
        0x96b582de,
        0x1fb2,
        0x45f7,
        [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d],
    ));
    let end = size - 32;
    img[end - table.len()..end].copy_from_slice(&table);
    img
}

/// A 256 KiB image with an SNP KERNEL_HASHES section, laid out like OVMF's AmdSev build: SEC
/// memory, secrets, CPUID, the hashes page (table at 0x80_bc00) and more SEC memory, with the
/// reset block at 0xfffc_b004. For measured direct boot, which Debian's OVMF cannot do.
pub fn with_kernel_hashes() -> Vec<u8> {
    build(
        0x40000,
        &[
            (0x80_0000, 0x9000, 1),
            (0x80_9000, 0x1000, 2),
            (0x80_a000, 0x1000, 3),
            (0x80_b000, 0x1000, 0x10),
            (0x80_c000, 0x4000, 1),
        ],
        0xfffc_b004,
        Some(0x80_bc00),
    )
}

//! A short, deterministic, stable-toolchain stand-in for the cargo-fuzz targets: a few thousand
//! mutations (truncations, bit flips, random overwrites, random files) of real inputs, fed to
//! the same entry points (`veil_firmware::fuzzing`). A panic fails the test. Long runs:
//! `firmware/fuzz/run.sh` (needs nightly and cargo-fuzz).

use std::sync::Arc;

use veil_firmware::fuzzing;
use veil_firmware::guid::Guid;
use veil_firmware::ovmf::footer::{self, FooterEntry};
use veil_firmware::ovmf::{Ovmf, sev, tdvf};
use veil_firmware::payload::{VmConfig, ovmf_plan};
use veil_firmware::plan::Platform;

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Iterations per test: `VEIL_FUZZ_ITERS` overrides the smoke default of 2000.
fn iterations() -> usize {
    std::env::var("VEIL_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    match rng.below(5) {
        0 => v.truncate(rng.below(seed.len() + 1)),
        1 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
        }
        2 => {
            // Overwrite a run near the end, where OVMF tables and metadata live.
            let len = 1 + rng.below(32);
            let at = v.len().saturating_sub(rng.below(0x1100) + len);
            for b in v.iter_mut().skip(at).take(len) {
                *b = rng.next() as u8;
            }
        }
        3 => {
            let i = rng.below(v.len());
            let val = [0u8, 0xff, 0x7f, 0x80][rng.below(4)];
            for b in v.iter_mut().skip(i).take(4) {
                *b = val;
            }
        }
        _ => {
            let n = rng.below(4096);
            v = (0..n).map(|_| rng.next() as u8).collect();
        }
    }
    v
}

/// A 64 KiB OVMF-format image with SEV metadata, an SEV-ES reset block and TDVF metadata.
fn synthetic_ovmf() -> Vec<u8> {
    let size = 0x10000usize;
    let mut img = vec![0x90u8; size];
    let sev_at = size - 0x800;
    let mut m = b"ASEV".to_vec();
    let secs: [(u32, u32, u32); 4] = [
        (0x80_0000, 0x2000, 1),
        (0x80_2000, 0x1000, 2),
        (0x80_3000, 0x1000, 3),
        (0x80_4000, 0x1000, 0x10),
    ];
    m.extend_from_slice(&(16 + 12 * secs.len() as u32).to_le_bytes());
    m.extend_from_slice(&1u32.to_le_bytes());
    m.extend_from_slice(&(secs.len() as u32).to_le_bytes());
    for (g, s, t) in secs {
        for x in [g, s, t] {
            m.extend_from_slice(&x.to_le_bytes());
        }
    }
    img[sev_at..sev_at + m.len()].copy_from_slice(&m);
    let td_at = size - 0x600;
    let mut t = b"TDVF".to_vec();
    t.extend_from_slice(&(16u32 + 32 * 2).to_le_bytes());
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(&2u32.to_le_bytes());
    // BFV: the whole image, measured; TEMP_MEM: 2 pages.
    for (off, raw, gpa, sz, ty, attr) in [
        (0u32, size as u32, 0xffff_0000u64, size as u64, 0u32, 1u32),
        (0, 0, 0x80_0000, 0x2000, 3, 0),
    ] {
        t.extend_from_slice(&off.to_le_bytes());
        t.extend_from_slice(&raw.to_le_bytes());
        t.extend_from_slice(&gpa.to_le_bytes());
        t.extend_from_slice(&sz.to_le_bytes());
        t.extend_from_slice(&ty.to_le_bytes());
        t.extend_from_slice(&attr.to_le_bytes());
    }
    img[td_at..td_at + t.len()].copy_from_slice(&t);
    let entries = [
        FooterEntry {
            guid: sev::SEV_METADATA_GUID,
            data: 0x800u32.to_le_bytes().to_vec(),
        },
        FooterEntry {
            guid: tdvf::TDVF_METADATA_GUID,
            data: 0x600u32.to_le_bytes().to_vec(),
        },
        FooterEntry {
            guid: sev::SEV_ES_RESET_BLOCK_GUID,
            data: 0xffff_f000u32.to_le_bytes().to_vec(),
        },
        FooterEntry {
            guid: Guid::new(1, 2, 3, [4; 8]),
            data: vec![],
        },
    ];
    let table = footer::encode(&entries);
    img[size - 32 - table.len()..size - 32].copy_from_slice(&table);
    img
}

fn synthetic_igvm(ovmf: &[u8]) -> Vec<u8> {
    let o = Ovmf::parse(Arc::from(ovmf)).expect("the synthetic image parses");
    let plans: Vec<_> = [Platform::SevSnp, Platform::Tdx]
        .into_iter()
        .map(|p| {
            let config = VmConfig {
                platform: p,
                cpus: 1,
                memory: 256 << 20,
                cpu_signature: 0xa00f11,
                sev_features: 1,
                policy: Some(0x30000),
                host_data: [0; 32],
                cmdline: None,
            };
            ovmf_plan(&o, std::path::Path::new("synthetic.fd"), None, &config).expect("plans")
        })
        .collect();
    veil_firmware::igvm::build(&plans).expect("builds")
}

/// Recomputes the IGVM fixed header's CRC32 so mutations get past the checksum.
fn fix_crc(v: &mut [u8]) {
    if v.len() < 24 {
        return;
    }
    let off = u32::from_le_bytes([v[8], v[9], v[10], v[11]]) as usize;
    let size = u32::from_le_bytes([v[12], v[13], v[14], v[15]]) as usize;
    let Some(end) = off.checked_add(size).filter(|e| *e <= v.len() && off >= 24) else {
        return;
    };
    v[20..24].fill(0);
    let mut h = crc32fast::Hasher::new();
    h.update(&v[..24]);
    h.update(&v[off..end]);
    let c = h.finalize();
    v[20..24].copy_from_slice(&c.to_le_bytes());
}

#[test]
fn ovmf_parser_survives_mutations() {
    let seed = synthetic_ovmf();
    // The seed itself is valid for every platform.
    let o = Ovmf::parse(Arc::from(seed.as_slice())).unwrap();
    assert_eq!(o.sev_sections().unwrap().len(), 4);
    assert_eq!(o.tdvf_sections().unwrap().len(), 2);
    let mut rng = Rng(0x5eed_0f0f_1234_5678);
    for _ in 0..iterations() {
        fuzzing::ovmf(&mutate(&mut rng, &seed));
    }
    if let Ok(debian) = std::fs::read("/usr/share/ovmf/OVMF.fd") {
        for _ in 0..200 {
            fuzzing::ovmf(&mutate(&mut rng, &debian));
        }
    }
}

#[test]
fn igvm_parser_survives_mutations() {
    let seed = synthetic_igvm(&synthetic_ovmf());
    let mut rng = Rng(0x1911_cafe_f00d_0001);
    for i in 0..iterations() {
        let mut v = mutate(&mut rng, &seed);
        if i % 2 == 0 {
            fix_crc(&mut v);
        }
        fuzzing::igvm(&v);
    }
}

/// A minimal bzImage and a minimal ELF64 kernel.
fn kernels() -> [Vec<u8>; 2] {
    let mut bz = vec![0u8; 0x3000];
    bz[0x1f1] = 3;
    bz[0x201] = 0x6a;
    bz[0x202..0x206].copy_from_slice(b"HdrS");
    bz[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
    bz[0x22c..0x230].copy_from_slice(&0x37ff_ffffu32.to_le_bytes());
    bz[0x238..0x23c].copy_from_slice(&255u32.to_le_bytes());
    let mut elf = vec![0u8; 0x2000];
    elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
    elf[0x18..0x20].copy_from_slice(&0x10_0000u64.to_le_bytes());
    elf[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
    elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
    elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
    elf[0x40..0x44].copy_from_slice(&1u32.to_le_bytes());
    elf[0x48..0x50].copy_from_slice(&0x1000u64.to_le_bytes());
    elf[0x58..0x60].copy_from_slice(&0x10_0000u64.to_le_bytes());
    elf[0x60..0x68].copy_from_slice(&0x1000u64.to_le_bytes());
    elf[0x68..0x70].copy_from_slice(&0x2000u64.to_le_bytes());
    [bz, elf]
}

#[test]
fn kernel_loader_survives_mutations() {
    let seeds = kernels();
    let mut rng = Rng(0x6b65_726e_656c_0001);
    for i in 0..iterations() {
        fuzzing::kernel(&mutate(&mut rng, &seeds[i % 2]));
    }
}

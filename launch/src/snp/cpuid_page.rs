//! The SNP CPUID page: the CPUID values the guest will trust, checked by the firmware at
//! `SNP_LAUNCH_UPDATE` (SEV-SNP firmware ABI, "CPUID reporting"; Linux `struct snp_cpuid_table`).
//!
//! Layout: `count` u32, reserved u32, reserved u64, then up to 64 functions of 48 bytes:
//! `eax_in`, `ecx_in` (u32), `xcr0_in`, `xss_in` (u64), `eax`, `ebx`, `ecx`, `edx` (u32),
//! reserved u64.

use kvm_bindings::{KVM_CPUID_FLAG_SIGNIFCANT_INDEX, kvm_cpuid_entry2};

/// Most functions a CPUID page holds.
pub const MAX_FUNCTIONS: usize = 64;
const HEADER: usize = 16;
const FN_SIZE: usize = 48;
/// XSAVE area size for XCR0 = x87 | SSE (legacy area 512 + header 64), reported in 0xD.0/1 EBX.
pub const XSAVE_SIZE_X87_SSE: u32 = 0x240;

/// One function of the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuidFunction {
    /// Leaf.
    pub eax_in: u32,
    /// Sub-leaf (0 when the leaf has none).
    pub ecx_in: u32,
    /// XCR0 the values hold for (leaf 0xD).
    pub xcr0_in: u64,
    /// IA32_XSS the values hold for (leaf 0xD).
    pub xss_in: u64,
    /// Output registers.
    pub eax: u32,
    #[allow(missing_docs)]
    pub ebx: u32,
    #[allow(missing_docs)]
    pub ecx: u32,
    #[allow(missing_docs)]
    pub edx: u32,
}

/// Why a set of CPUID entries cannot become a CPUID page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{count} CPUID functions do not fit in the SNP CPUID page (at most {MAX_FUNCTIONS})")]
pub struct TooManyFunctions {
    /// How many there were.
    pub count: usize,
}

/// The functions for a CPUID page from KVM's supported CPUID, the way QEMU builds it: the
/// hypervisor range (0x4000_0000..) is left out, sub-leaves kept only where they matter, and
/// leaf 0xD sub-leaves 0 and 1 state their XSAVE size for XCR0 = x87 | SSE.
pub fn functions_from_cpuid(
    entries: &[kvm_cpuid_entry2],
) -> Result<Vec<CpuidFunction>, TooManyFunctions> {
    let fns: Vec<CpuidFunction> = entries
        .iter()
        .filter(|e| !(0x4000_0000..0x5000_0000).contains(&e.function))
        .map(|e| {
            let mut f = CpuidFunction {
                eax_in: e.function,
                ecx_in: if e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0 {
                    e.index
                } else {
                    0
                },
                eax: e.eax,
                ebx: e.ebx,
                ecx: e.ecx,
                edx: e.edx,
                ..Default::default()
            };
            if f.eax_in == 0xd && f.ecx_in <= 1 {
                f.xcr0_in = 1;
                f.ebx = XSAVE_SIZE_X87_SSE;
            }
            f
        })
        .collect();
    if fns.len() > MAX_FUNCTIONS {
        return Err(TooManyFunctions { count: fns.len() });
    }
    Ok(fns)
}

/// Writes `fns` into a 4 KiB page.
pub fn encode(fns: &[CpuidFunction], page: &mut [u8]) {
    page.fill(0);
    page[0..4].copy_from_slice(&(fns.len() as u32).to_le_bytes());
    for (i, f) in fns.iter().enumerate().take(MAX_FUNCTIONS) {
        let b = &mut page[HEADER + i * FN_SIZE..HEADER + (i + 1) * FN_SIZE];
        b[0..4].copy_from_slice(&f.eax_in.to_le_bytes());
        b[4..8].copy_from_slice(&f.ecx_in.to_le_bytes());
        b[8..16].copy_from_slice(&f.xcr0_in.to_le_bytes());
        b[16..24].copy_from_slice(&f.xss_in.to_le_bytes());
        b[24..28].copy_from_slice(&f.eax.to_le_bytes());
        b[28..32].copy_from_slice(&f.ebx.to_le_bytes());
        b[32..36].copy_from_slice(&f.ecx.to_le_bytes());
        b[36..40].copy_from_slice(&f.edx.to_le_bytes());
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// A page's header and functions as they stand (count clamped to 64), plus whether the
/// reserved fields are all zero.
pub fn decode(page: &[u8]) -> (u32, Vec<CpuidFunction>, bool) {
    let count = u32_at(page, 0);
    let mut reserved_ok = u32_at(page, 4) == 0 && u64_at(page, 8) == 0;
    let fns = (0..(count as usize).min(MAX_FUNCTIONS))
        .map(|i| {
            let b = &page[HEADER + i * FN_SIZE..HEADER + (i + 1) * FN_SIZE];
            reserved_ok &= u64_at(b, 40) == 0;
            CpuidFunction {
                eax_in: u32_at(b, 0),
                ecx_in: u32_at(b, 4),
                xcr0_in: u64_at(b, 8),
                xss_in: u64_at(b, 16),
                eax: u32_at(b, 24),
                ebx: u32_at(b, 28),
                ecx: u32_at(b, 32),
                edx: u32_at(b, 36),
            }
        })
        .collect();
    (count, fns, reserved_ok)
}

/// Human-readable differences between the page Veil sent and the one the firmware returned.
pub fn diff(sent: &[u8], corrected: &[u8]) -> Vec<String> {
    let (_, a, _) = decode(sent);
    let (_, b, _) = decode(corrected);
    let mut out = Vec::new();
    for (x, y) in a.iter().zip(b.iter()) {
        for (reg, u, v) in [
            ("eax", x.eax, y.eax),
            ("ebx", x.ebx, y.ebx),
            ("ecx", x.ecx, y.ecx),
            ("edx", x.edx, y.edx),
        ] {
            if u != v {
                out.push(format!(
                    "CPUID {:#x}.{:#x} {reg}: sent {u:#010x}, firmware wants {v:#010x}",
                    x.eax_in, x.ecx_in
                ));
            }
        }
    }
    if a.len() != b.len() {
        out.push(format!(
            "function count: sent {}, firmware returned {}",
            a.len(),
            b.len()
        ));
    }
    out
}

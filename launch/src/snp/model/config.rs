//! The modelled SEV-SNP platform's settings and its CPUID.

use kvm_bindings::kvm_cpuid_entry2;

use crate::snp::cpuid_page::XSAVE_SIZE_X87_SSE;
use crate::sys::snp as sys;

/// The modelled platform's settings.
#[derive(Debug, Clone)]
pub struct SnpModelConfig {
    /// `vmsa_features` bits KVM accepts in INIT2 (KVM offers DebugSwap).
    pub supported_vmsa_features: u64,
    /// What `KVM_GET_SUPPORTED_CPUID` returns.
    pub supported_cpuid: Vec<kvm_cpuid_entry2>,
    /// The hardware's CPUID: the firmware rejects feature bits outside it.
    pub platform_cpuid: Vec<kvm_cpuid_entry2>,
    /// The firmware's API version (major, minor); policies asking for more are refused.
    pub api_version: (u8, u8),
    /// Do at most this many pages per `LAUNCH_UPDATE` (the kernel may stop early).
    pub max_pages_per_update: Option<u64>,
    /// Fail every n-th `LAUNCH_UPDATE` with `-EAGAIN` (the caller must retry).
    pub eagain_every: Option<u32>,
}

fn leaf(function: u32, index: u32, flags: u32, r: [u32; 4]) -> kvm_cpuid_entry2 {
    kvm_cpuid_entry2 {
        function,
        index,
        flags,
        eax: r[0],
        ebx: r[1],
        ecx: r[2],
        edx: r[3],
        ..Default::default()
    }
}

/// A representative AMD EPYC (Zen 3) CPUID, the model platform's hardware and KVM's supported
/// set. CPUID page contents are not measured, so the digest does not depend on it.
pub fn epyc_cpuid() -> Vec<kvm_cpuid_entry2> {
    let idx = kvm_bindings::KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
    vec![
        leaf(0x0, 0, 0, [0x10, 0x6874_7541, 0x444d_4163, 0x6974_6e65]),
        leaf(
            0x1,
            0,
            0,
            [0x00a0_0f11, 0x0000_0800, 0xfef8_3203, 0x178b_fbff],
        ),
        leaf(0x7, 0, idx, [0, 0x219c_97a9, 0x0040_068c, 0x0000_0010]),
        leaf(0xd, 0, idx, [0x7, XSAVE_SIZE_X87_SSE, 0x340, 0]),
        leaf(0xd, 1, idx, [0xf, XSAVE_SIZE_X87_SSE, 0, 0]),
        leaf(
            0x8000_0000,
            0,
            0,
            [0x8000_0021, 0x6874_7541, 0x444d_4163, 0x6974_6e65],
        ),
        leaf(
            0x8000_0001,
            0,
            0,
            [0x00a0_0f11, 0, 0x75c2_37ff, 0x2fd3_fbff],
        ),
        leaf(0x8000_0008, 0, 0, [0x3030, 0x0101_d205, 0, 0]),
        leaf(0x8000_001f, 0, 0, [0x0001_ff7f, 0x4177, 0x1fd, 0x1]),
    ]
}

impl Default for SnpModelConfig {
    fn default() -> Self {
        SnpModelConfig {
            supported_vmsa_features: sys::SEV_FEAT_DEBUG_SWAP,
            supported_cpuid: epyc_cpuid(),
            platform_cpuid: epyc_cpuid(),
            api_version: (1, 55),
            max_pages_per_update: None,
            eagain_every: None,
        }
    }
}

//! Building an IGVM file from a launch plan (`veil igvm build`), so that loading it back gives
//! the same plan and therefore the same digest as launching the payload directly.

use igvm::{
    IgvmDirectiveHeader, IgvmFile, IgvmInitializationHeader, IgvmPlatformHeader, IgvmRevision,
};
use igvm_defs::{
    IGVM_VHS_SNP_ID_BLOCK_PUBLIC_KEY, IGVM_VHS_SNP_ID_BLOCK_SIGNATURE, IGVM_VHS_SUPPORTED_PLATFORM,
    IgvmPageDataFlags, IgvmPageDataType,
};
use zerocopy::FromBytes;

use super::isolation;
use crate::id_block::{ID_AUTH_SIZE, ID_BLOCK_SIZE};
use crate::measure::vmsa;
use crate::plan::{IdBlockPair, LaunchPlan, PAGE_SIZE, PageData, PageKind, Platform, SNP_VMSA_GPA};

/// Why an IGVM file could not be built.
#[derive(Debug, thiserror::Error)]
pub enum IgvmBuildError {
    /// No platform was asked for, or one twice.
    #[error("platforms {0:?}: give each of sev-snp, tdx, none at most once, at least one")]
    Platforms(Vec<Platform>),
    /// The ID block does not fit the plan.
    #[error("SNP ID block: {0}")]
    IdBlock(String),
    /// The igvm crate refused the headers.
    #[error("the IGVM headers are invalid: {0}")]
    Igvm(igvm::Error),
}

fn platform_version(p: Platform) -> u16 {
    match p {
        Platform::None => igvm_defs::IGVM_NATIVE_PLATFORM_VERSION,
        Platform::SevSnp => igvm_defs::IGVM_SEV_SNP_PLATFORM_VERSION,
        Platform::Tdx => igvm_defs::IGVM_TDX_PLATFORM_VERSION,
    }
}

/// Serializes one IGVM file holding every plan, each under its own compatibility mask
/// (1, 2, 4, ... in the order given). Page order within each platform is the plan's order.
pub fn build(plans: &[LaunchPlan]) -> Result<Vec<u8>, IgvmBuildError> {
    let platforms: Vec<Platform> = plans.iter().map(|p| p.platform).collect();
    let distinct = platforms
        .iter()
        .enumerate()
        .all(|(i, p)| !platforms[..i].contains(p));
    if plans.is_empty() || !distinct {
        return Err(IgvmBuildError::Platforms(platforms));
    }
    let mut headers = Vec::new();
    let mut inits = Vec::new();
    let mut directives = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        let mask = 1u32 << i;
        headers.push(IgvmPlatformHeader::SupportedPlatform(
            IGVM_VHS_SUPPORTED_PLATFORM {
                compatibility_mask: mask,
                highest_vtl: 0,
                platform_type: isolation(plan.platform),
                platform_version: platform_version(plan.platform),
                shared_gpa_boundary: 0,
            },
        ));
        if plan.platform == Platform::SevSnp {
            inits.push(IgvmInitializationHeader::GuestPolicy {
                policy: plan.policy.unwrap_or(0x30000),
                compatibility_mask: mask,
            });
        }
        let mut page = [0u8; PAGE_SIZE as usize];
        for imp in &plan.imports {
            for p in 0..imp.pages() {
                let (data_type, unmeasured) = match imp.kind {
                    PageKind::Normal | PageKind::Zero => (IgvmPageDataType::NORMAL, false),
                    PageKind::Unmeasured => (IgvmPageDataType::NORMAL, true),
                    PageKind::Secrets => (IgvmPageDataType::SECRETS, false),
                    PageKind::Cpuid => (IgvmPageDataType::CPUID_DATA, false),
                };
                // Data-less pages stay data-less: the loader imports them as ZERO (SNP) or as
                // zero pages (TDX), as QEMU and cloud-hypervisor do.
                let data = match (&imp.data, imp.kind) {
                    (_, PageKind::Zero | PageKind::Secrets) | (PageData::Zero, _) => Vec::new(),
                    _ => {
                        imp.page_into(p, &mut page);
                        page.to_vec()
                    }
                };
                directives.push(IgvmDirectiveHeader::PageData {
                    gpa: imp.gpa + p * PAGE_SIZE,
                    compatibility_mask: mask,
                    flags: IgvmPageDataFlags::new().with_unmeasured(unmeasured),
                    data_type,
                    data,
                });
            }
        }
        if plan.platform == Platform::SevSnp {
            if let Some(bsp) = plan.vcpus.first() {
                let page = vmsa::build(bsp, plan.sev_features);
                let v = igvm::snp_defs::SevVmsa::read_from_bytes(
                    &page[..size_of::<igvm::snp_defs::SevVmsa>()],
                )
                .expect("a 4 KiB page holds a whole SevVmsa");
                directives.push(IgvmDirectiveHeader::SnpVpContext {
                    gpa: SNP_VMSA_GPA,
                    compatibility_mask: mask,
                    vp_index: 0,
                    vmsa: Box::new(v),
                });
            }
            if let Some(pair) = &plan.id_block {
                directives.push(id_block_directive(
                    pair,
                    mask,
                    plan.policy.unwrap_or(0x30000),
                )?);
            }
        }
    }
    let file = IgvmFile::new(IgvmRevision::V1, headers, inits, directives)
        .map_err(IgvmBuildError::Igvm)?;
    let mut out = Vec::new();
    file.serialize(&mut out).map_err(IgvmBuildError::Igvm)?;
    Ok(out)
}

/// The SNP_ID_BLOCK directive carrying `pair`; IGVM stores the policy only in the guest policy
/// header, so the ID block's policy must equal it.
fn id_block_directive(
    pair: &IdBlockPair,
    mask: u32,
    policy: u64,
) -> Result<IgvmDirectiveHeader, IgvmBuildError> {
    let (b, a) = (&pair.id_block, &pair.id_auth);
    if b.len() != ID_BLOCK_SIZE || a.len() != ID_AUTH_SIZE {
        return Err(IgvmBuildError::IdBlock(format!(
            "blocks of {} and {} bytes, expected {ID_BLOCK_SIZE} and {ID_AUTH_SIZE}",
            b.len(),
            a.len()
        )));
    }
    let u32_at = |bytes: &[u8], at: usize| {
        u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
    };
    let mut p = [0u8; 8];
    p.copy_from_slice(&b[0x58..0x60]);
    if u64::from_le_bytes(p) != policy {
        return Err(IgvmBuildError::IdBlock(format!(
            "its policy {:#x} differs from the guest policy {policy:#x}",
            u64::from_le_bytes(p)
        )));
    }
    let sig = |at: usize| {
        let mut s = IGVM_VHS_SNP_ID_BLOCK_SIGNATURE {
            r_comp: [0; 72],
            s_comp: [0; 72],
        };
        s.r_comp.copy_from_slice(&a[at..at + 72]);
        s.s_comp.copy_from_slice(&a[at + 72..at + 144]);
        Box::new(s)
    };
    let key = |at: usize| {
        let mut k = IGVM_VHS_SNP_ID_BLOCK_PUBLIC_KEY {
            curve: u32_at(a, at),
            reserved: 0,
            qx: [0; 72],
            qy: [0; 72],
        };
        k.qx.copy_from_slice(&a[at + 4..at + 76]);
        k.qy.copy_from_slice(&a[at + 76..at + 148]);
        Box::new(k)
    };
    let mut ld = [0u8; 48];
    ld.copy_from_slice(&b[..48]);
    let mut family_id = [0u8; 16];
    family_id.copy_from_slice(&b[0x30..0x40]);
    let mut image_id = [0u8; 16];
    image_id.copy_from_slice(&b[0x40..0x50]);
    Ok(IgvmDirectiveHeader::SnpIdBlock {
        compatibility_mask: mask,
        author_key_enabled: u8::from(pair.author_key_enabled),
        reserved: [0; 3],
        ld,
        family_id,
        image_id,
        version: u32_at(b, 0x50),
        guest_svn: u32_at(b, 0x54),
        id_key_algorithm: u32_at(a, 0),
        author_key_algorithm: u32_at(a, 4),
        id_key_signature: sig(0x40),
        id_public_key: key(0x240),
        author_key_signature: sig(0x680),
        author_public_key: key(0x880),
    })
}

//! Building an IGVM file from a launch plan (`veil igvm build`), so that loading it back gives
//! the same plan and therefore the same digest as launching the payload directly.

use igvm::{
    IgvmDirectiveHeader, IgvmFile, IgvmInitializationHeader, IgvmPlatformHeader, IgvmRevision,
};
use igvm_defs::{IGVM_VHS_SUPPORTED_PLATFORM, IgvmPageDataFlags, IgvmPageDataType};
use zerocopy::FromBytes;

use super::isolation;
use crate::measure::vmsa;
use crate::plan::{LaunchPlan, PAGE_SIZE, PageData, PageKind, Platform, SNP_VMSA_GPA};

/// Why an IGVM file could not be built.
#[derive(Debug, thiserror::Error)]
pub enum IgvmBuildError {
    /// No platform was asked for, or one twice.
    #[error("platforms {0:?}: give each of sev-snp, tdx, none at most once, at least one")]
    Platforms(Vec<Platform>),
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
        }
    }
    let file = IgvmFile::new(IgvmRevision::V1, headers, inits, directives)
        .map_err(IgvmBuildError::Igvm)?;
    let mut out = Vec::new();
    file.serialize(&mut out).map_err(IgvmBuildError::Igvm)?;
    Ok(out)
}

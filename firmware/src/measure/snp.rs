//! The SEV-SNP launch digest (SNP firmware ABI, PAGE_INFO chaining).

use sha2::{Digest, Sha384};

use super::{MeasureError, Step, Trace};
use crate::measure::{pages, vmsa};
use crate::plan::{LaunchPlan, PAGE_SIZE, PageKind, SNP_VMSA_GPA};

/// `LAUNCH_UPDATE` page types as the firmware measures them.
const NORMAL: u8 = 1;
const VMSA: u8 = 2;
const ZERO: u8 = 3;
const UNMEASURED: u8 = 4;
const SECRETS: u8 = 5;
const CPUID: u8 = 6;

/// A running SNP launch digest.
#[derive(Debug, Clone)]
pub struct SnpDigest {
    ld: [u8; 48],
}

impl Default for SnpDigest {
    fn default() -> Self {
        SnpDigest { ld: [0; 48] }
    }
}

impl SnpDigest {
    /// Chains one page: `LD = SHA-384(PAGE_INFO)` with the current digest, the page's contents
    /// digest, its type and its GPA (VMPL permissions and IMI are zero under KVM).
    pub fn update(&mut self, page_type: u8, gpa: u64, contents: &[u8; 48]) {
        let mut info = [0u8; 0x70];
        info[..48].copy_from_slice(&self.ld);
        info[48..96].copy_from_slice(contents);
        info[0x60..0x62].copy_from_slice(&0x70u16.to_le_bytes());
        info[0x62] = page_type;
        info[0x68..0x70].copy_from_slice(&gpa.to_le_bytes());
        self.ld.copy_from_slice(&Sha384::digest(info));
    }

    /// The digest so far.
    pub fn value(&self) -> [u8; 48] {
        self.ld
    }
}

fn sha384(data: &[u8]) -> [u8; 48] {
    let mut out = [0u8; 48];
    out.copy_from_slice(&Sha384::digest(data));
    out
}

/// Computes the SNP launch digest of `plan`.
pub fn digest(
    plan: &LaunchPlan,
    mut trace: Option<&mut Trace<'_>>,
) -> Result<[u8; 48], MeasureError> {
    let mut ld = SnpDigest::default();
    let zero_page = pages::zero_page_hash();
    for imp in &plan.imports {
        let mut step = |ld: &SnpDigest, gpa: u64| {
            if let Some(t) = trace.as_deref_mut() {
                t(Step {
                    gpa,
                    what: imp.kind.name(),
                    label: &imp.label,
                    digest: &ld.value(),
                });
            }
        };
        let ty = match imp.kind {
            PageKind::Normal => {
                pages::for_each_page_hash(imp, &zero_page, |i, contents| {
                    let gpa = imp.gpa + i * PAGE_SIZE;
                    ld.update(NORMAL, gpa, contents);
                    step(&ld, gpa);
                });
                continue;
            }
            PageKind::Zero => ZERO,
            PageKind::Unmeasured => UNMEASURED,
            PageKind::Secrets => SECRETS,
            PageKind::Cpuid => CPUID,
        };
        for i in 0..imp.pages() {
            let gpa = imp.gpa + i * PAGE_SIZE;
            ld.update(ty, gpa, &[0u8; 48]);
            step(&ld, gpa);
        }
    }
    for (index, vcpu) in plan.vcpus.iter().enumerate() {
        let page = vmsa::build(vcpu, plan.sev_features);
        ld.update(VMSA, SNP_VMSA_GPA, &sha384(&page[..]));
        if let Some(t) = trace.as_deref_mut() {
            t(Step {
                gpa: SNP_VMSA_GPA,
                what: "vmsa",
                label: &format!("VMSA of vCPU {index}"),
                digest: &ld.value(),
            });
        }
    }
    if plan.vcpus.is_empty() {
        return Err(MeasureError::NoVcpus);
    }
    Ok(ld.value())
}

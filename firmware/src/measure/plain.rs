//! A SHA-384 over the launch plan of a plain (non-confidential) guest, so such launches are
//! reproducible too.
//!
//! Encoding, all integers little-endian: `"VEIL-PLAN-V1"`; per page of every import, in plan
//! order, `"PAGE"`, gpa u64, kind name length u8 and bytes, then the SHA-384 of the page's 4096
//! bytes for kinds that carry data (normal, unmeasured) - so how imports are split does not
//! matter, and page digests can be computed in parallel; per vCPU `"VCPU"` and its VMSA-layout register
//! page; per memory range `"RAM"`, gpa u64, size u64; `"ENTRY"` and the entry point when set.

use sha2::{Digest, Sha384};

use super::{MeasureError, Step, Trace, pages, vmsa};
use crate::plan::{LaunchPlan, PAGE_SIZE, PageKind};

/// Computes the plain plan digest.
pub fn digest(
    plan: &LaunchPlan,
    mut trace: Option<&mut Trace<'_>>,
) -> Result<[u8; 48], MeasureError> {
    let mut h = Sha384::new();
    h.update(b"VEIL-PLAN-V1");
    let zero_page = pages::zero_page_hash();
    for imp in &plan.imports {
        let name = imp.kind.name().as_bytes();
        let hashes = match imp.kind {
            PageKind::Normal | PageKind::Unmeasured => pages::page_hashes(imp, &zero_page),
            _ => Vec::new(),
        };
        for i in 0..imp.pages() {
            h.update(b"PAGE");
            h.update((imp.gpa + i * PAGE_SIZE).to_le_bytes());
            h.update([name.len() as u8]);
            h.update(name);
            if let Some(d) = hashes.get(i as usize) {
                h.update(d);
            }
        }
        if let Some(t) = trace.as_deref_mut() {
            let mut out = [0u8; 48];
            out.copy_from_slice(&h.clone().finalize());
            t(Step {
                gpa: imp.gpa,
                what: imp.kind.name(),
                label: &imp.label,
                digest: &out,
            });
        }
    }
    if plan.vcpus.is_empty() {
        return Err(MeasureError::NoVcpus);
    }
    for v in &plan.vcpus {
        h.update(b"VCPU");
        h.update(&vmsa::build(v, 0)[..]);
    }
    for r in &plan.memory {
        h.update(b"RAM");
        h.update(r.gpa.to_le_bytes());
        h.update(r.size.to_le_bytes());
    }
    if let Some(e) = plan.entry {
        h.update(b"ENTRY");
        h.update(e.to_le_bytes());
    }
    let mut out = [0u8; 48];
    out.copy_from_slice(&h.finalize());
    Ok(out)
}

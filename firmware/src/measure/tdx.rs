//! TDX MRTD as upstream KVM builds it.
//!
//! `KVM_TDX_INIT_MEM_REGION` works page by page: TDH.MEM.PAGE.ADD, then (with the MEASURE flag)
//! TDH.MR.EXTEND over the page's sixteen 256-byte chunks, before it moves to the next page. The
//! TDX module folds each into one running SHA-384: PAGE.ADD adds a 128-byte block
//! `"MEM.PAGE.ADD"` (zero padded to 16) with the GPA at byte 16; MR.EXTEND adds a 128-byte block
//! `"MR.EXTEND"` with the chunk's GPA at byte 16, followed by the 256 bytes of the chunk.
//! MRTD is the digest at TDH.MR.FINALIZE.

use sha2::{Digest, Sha384};

use super::{MeasureError, Step, Trace};
use crate::plan::{LaunchPlan, PAGE_SIZE, PageKind, Platform};

const CHUNK: usize = 256;

fn block(tag: &[u8], gpa: u64) -> [u8; 128] {
    let mut b = [0u8; 128];
    b[..tag.len()].copy_from_slice(tag);
    b[16..24].copy_from_slice(&gpa.to_le_bytes());
    b
}

/// Computes MRTD for `plan`.
pub fn mrtd(
    plan: &LaunchPlan,
    mut trace: Option<&mut Trace<'_>>,
) -> Result<[u8; 48], MeasureError> {
    let mut h = Sha384::new();
    let mut buf = [0u8; PAGE_SIZE as usize];
    let snapshot = |h: &Sha384| {
        let mut out = [0u8; 48];
        out.copy_from_slice(&h.clone().finalize());
        out
    };
    for imp in &plan.imports {
        let extend = match imp.kind {
            PageKind::Normal | PageKind::Zero => true,
            PageKind::Unmeasured => false,
            PageKind::Secrets | PageKind::Cpuid => {
                return Err(MeasureError::KindNotOnPlatform {
                    platform: Platform::Tdx,
                    kind: imp.kind.name(),
                    label: imp.label.clone(),
                    gpa: imp.gpa,
                });
            }
        };
        for i in 0..imp.pages() {
            let gpa = imp.gpa + i * PAGE_SIZE;
            h.update(block(b"MEM.PAGE.ADD", gpa));
            if let Some(t) = trace.as_deref_mut() {
                t(Step {
                    gpa,
                    what: "page.add",
                    label: &imp.label,
                    digest: &snapshot(&h),
                });
            }
            if !extend {
                continue;
            }
            let page: &[u8] = match imp.page_slice(i) {
                Some(s) if s.len() == PAGE_SIZE as usize => s,
                _ => {
                    imp.page_into(i, &mut buf);
                    &buf
                }
            };
            for (c, chunk) in page.chunks_exact(CHUNK).enumerate() {
                h.update(block(b"MR.EXTEND", gpa + (c * CHUNK) as u64));
                h.update(chunk);
            }
            if let Some(t) = trace.as_deref_mut() {
                t(Step {
                    gpa,
                    what: "mr.extend",
                    label: &imp.label,
                    digest: &snapshot(&h),
                });
            }
        }
    }
    let mut out = [0u8; 48];
    out.copy_from_slice(&h.finalize());
    Ok(out)
}

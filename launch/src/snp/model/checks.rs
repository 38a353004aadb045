//! The SNP firmware's checks the model applies: the CPUID page at `LAUNCH_UPDATE` and the ID
//! block at `LAUNCH_FINISH`.

use super::{SnpModel, hex};
use crate::platform::{CommandError, Rule};
use crate::snp::cpuid_page::{self, XSAVE_SIZE_X87_SSE};
use crate::sys::snp as sys;
use veil_firmware::plan::PAGE_SIZE;

impl SnpModel {
    /// The firmware's ID block checks at `LAUNCH_FINISH`: the signatures, then the launch digest
    /// (ID block bytes 0..48) and the policy (bytes 0x58..0x60) against this launch's.
    pub(super) fn check_id_block(&self, block: &[u8], auth: &[u8]) -> Result<(), CommandError> {
        const CMD: &str = "SNP_LAUNCH_FINISH";
        let fail = |fw: u32, what: String| {
            CommandError::rule(CMD, libc::EIO, Rule::IdBlock, what).with_fw(u64::from(fw))
        };
        veil_firmware::id_block::verify(block, auth).map_err(|e| {
            fail(
                sys::SEV_RET_BAD_SIGNATURE,
                format!("the ID block does not verify: {e}"),
            )
        })?;
        if block[..48] != self.digest {
            return Err(fail(
                sys::SEV_RET_BAD_MEASUREMENT,
                format!(
                    "the ID block expects launch digest {}, the launch measured {}",
                    hex(&block[..48]),
                    hex(&self.digest)
                ),
            ));
        }
        let mut p = [0u8; 8];
        p.copy_from_slice(&block[0x58..0x60]);
        let policy = u64::from_le_bytes(p);
        if policy != self.policy {
            return Err(fail(
                sys::SEV_RET_POLICY_FAILURE,
                format!(
                    "the ID block expects policy {policy:#x}, the launch started with {:#x}",
                    self.policy
                ),
            ));
        }
        Ok(())
    }

    /// Checks a CPUID page against the firmware's policy; returns the corrected page on failure.
    pub(super) fn check_cpuid_page(&self, page: &[u8]) -> Result<(), (Vec<u8>, String)> {
        let (count, fns, reserved_ok) = cpuid_page::decode(page);
        let mut problems = Vec::new();
        if count as usize > cpuid_page::MAX_FUNCTIONS {
            problems.push(format!("count {count} exceeds 64"));
        }
        if !reserved_ok {
            problems.push("reserved fields are not zero".to_string());
        }
        let mut fixed = fns.clone();
        for f in fixed.iter_mut() {
            let hw = self
                .config
                .platform_cpuid
                .iter()
                .find(|e| e.function == f.eax_in && (e.index == f.ecx_in || e.flags == 0));
            let feature_leaf = matches!(f.eax_in, 0x1 | 0x7 | 0x8000_0001);
            if let (true, Some(hw)) = (feature_leaf, hw) {
                let (ecx, edx) = (f.ecx & hw.ecx, f.edx & hw.edx);
                let ebx = if f.eax_in == 0x7 {
                    f.ebx & hw.ebx
                } else {
                    f.ebx
                };
                if (ebx, ecx, edx) != (f.ebx, f.ecx, f.edx) {
                    problems.push(format!(
                        "CPUID {:#x}.{:#x} reports features the hardware lacks",
                        f.eax_in, f.ecx_in
                    ));
                    (f.ebx, f.ecx, f.edx) = (ebx, ecx, edx);
                }
            }
            if f.eax_in == 0xd && f.ecx_in <= 1 && f.xcr0_in <= 3 && f.ebx != XSAVE_SIZE_X87_SSE {
                problems.push(format!(
                    "CPUID 0xd.{:#x} EBX {:#x} is not the XSAVE size {XSAVE_SIZE_X87_SSE:#x} for \
                     XCR0 {:#x}",
                    f.ecx_in, f.ebx, f.xcr0_in
                ));
                f.ebx = XSAVE_SIZE_X87_SSE;
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        fixed.truncate(cpuid_page::MAX_FUNCTIONS);
        let mut out = vec![0u8; PAGE_SIZE as usize];
        cpuid_page::encode(&fixed, &mut out);
        Err((out, problems.join("; ")))
    }
}

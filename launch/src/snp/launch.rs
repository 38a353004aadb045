//! The SEV-SNP launch driver: replays a [`LaunchPlan`] through any [`SnpPlatform`] - KVM or
//! the model - in the order KVM requires (platform.md, "SEV-SNP launch sequence").

use veil_firmware::plan::{PAGE_SIZE, PageKind};
use veil_firmware::{LaunchPlan, Platform};

use super::cpuid_page;
use super::{Init2, LaunchFinish, LaunchStart, SnpPlatform};
use crate::error::LaunchError;
use crate::layout;
use crate::pages::PageBuffer;
use crate::platform::{CommandError, SlotSpec};
use crate::regs::VcpuRegisters;
use crate::sys::snp::{self as sys, page_type};

/// IOAPIC pins the VMM's userspace IOAPIC has (routes KVM reserves for it with the split
/// irqchip), as for plain and TDX VMs.
pub const IOAPIC_PINS: u32 = 24;

/// Choices the plan leaves to the launcher.
#[derive(Debug, Clone, Default)]
pub struct SnpOptions {
    /// Guest policy overriding the plan's (`--policy`); without either, QEMU's 0x30000.
    pub policy: Option<u64>,
}

/// What the launch did, for the caller's log.
#[derive(Debug, Clone)]
pub struct SnpLaunched {
    /// The policy given to `SNP_LAUNCH_START`.
    pub policy: u64,
    /// The memory slots created.
    pub slots: Vec<SlotSpec>,
    /// `SNP_LAUNCH_UPDATE` calls made (retries included).
    pub update_calls: u64,
    /// Differences the firmware corrected in the CPUID page (empty when it took it as sent).
    pub cpuid_corrections: Vec<String>,
}

/// The SNP page type of a plan page kind.
pub fn page_type_of(kind: PageKind) -> u8 {
    match kind {
        PageKind::Normal => page_type::NORMAL,
        PageKind::Zero => page_type::ZERO,
        PageKind::Unmeasured => page_type::UNMEASURED,
        PageKind::Secrets => page_type::SECRETS,
        PageKind::Cpuid => page_type::CPUID,
    }
}

/// One range through `SNP_LAUNCH_UPDATE`, continuing after partial progress and `-EAGAIN`.
fn update_range<P: SnpPlatform>(
    p: &mut P,
    gpa: u64,
    src: Option<&mut [u8]>,
    pages: u64,
    ptype: u8,
    calls: &mut u64,
) -> Result<(), CommandError> {
    const MAX_EAGAIN: u32 = 1000;
    let mut done = 0u64;
    let mut again = 0u32;
    let mut src = src;
    while done < pages {
        let rest = src
            .as_deref_mut()
            .map(|s| &mut s[(done * PAGE_SIZE) as usize..(pages * PAGE_SIZE) as usize]);
        *calls += 1;
        match p.launch_update(gpa / PAGE_SIZE + done, rest, pages - done, ptype) {
            Ok(0) => {
                return Err(CommandError::new(
                    "SNP_LAUNCH_UPDATE",
                    libc::EIO,
                    format!("no progress at GPA {:#x}", gpa + done * PAGE_SIZE),
                ));
            }
            Ok(n) => {
                done += n.min(pages - done);
                again = 0;
            }
            Err(e) if e.errno == libc::EAGAIN && again < MAX_EAGAIN => again += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Launches `plan` on `p`: INIT2, the split irqchip, page-state exits, guest_memfd slots set PRIVATE,
/// LAUNCH_START, one LAUNCH_UPDATE per import (the CPUID page built from the supported CPUID and
/// corrected once if the firmware rejects it), vCPUs created with their registers, LAUNCH_FINISH.
pub fn launch<P: SnpPlatform>(
    p: &mut P,
    plan: &LaunchPlan,
    opts: &SnpOptions,
) -> Result<SnpLaunched, LaunchError> {
    if plan.platform != Platform::SevSnp {
        return Err(LaunchError::WrongPlatform {
            plan: plan.platform,
            backend: Platform::SevSnp,
        });
    }
    if plan.vcpus.is_empty() {
        return Err(LaunchError::NoVcpus);
    }
    // Check every vCPU state before creating anything.
    let regs: Vec<VcpuRegisters> = plan
        .vcpus
        .iter()
        .enumerate()
        .map(|(i, s)| VcpuRegisters::from_state(i, s))
        .collect::<Result<_, _>>()?;
    let policy = opts.policy.or(plan.policy).unwrap_or(sys::DEFAULT_POLICY);

    p.init2(&Init2 {
        vmsa_features: plan.sev_features & !sys::SEV_FEAT_SNP_ACTIVE,
        ghcb_version: sys::GHCB_VERSION,
    })?;
    p.enable_split_irqchip(IOAPIC_PINS)?;
    p.enable_page_state_exits()?;
    let slots = layout::slots(plan);
    for s in &slots {
        p.add_slot(*s)?;
        // Guest memory starts private, as the firmware expects; the guest converts what it
        // shares with page-state changes.
        p.set_memory_attributes(s.gpa, s.size, true)?;
    }
    p.launch_start(&LaunchStart {
        policy,
        gosvw: [0; 16],
    })?;

    let mut calls = 0u64;
    let mut cpuid_corrections = Vec::new();
    let mut cpuid_fns = None;
    let mut supported = None;
    for imp in &plan.imports {
        let ptype = page_type_of(imp.kind);
        let pages = imp.pages();
        match imp.kind {
            PageKind::Zero => update_range(p, imp.gpa, None, pages, ptype, &mut calls)?,
            PageKind::Cpuid => {
                let fns = match &cpuid_fns {
                    Some(f) => f,
                    None => {
                        let entries = p.supported_cpuid()?;
                        let f = cpuid_page::functions_from_cpuid(&entries)
                            .map_err(|e| LaunchError::CpuidPage(e.to_string()))?;
                        supported = Some(entries);
                        cpuid_fns.insert(f)
                    }
                };
                // One page at a time, so that a rejected page is corrected and retried alone.
                for i in 0..pages {
                    let gpa = imp.gpa + i * PAGE_SIZE;
                    let mut buf = PageBuffer::zeroed(1);
                    cpuid_page::encode(fns, buf.as_mut_slice());
                    let sent = buf.as_slice().to_vec();
                    let first =
                        update_range(p, gpa, Some(buf.as_mut_slice()), 1, ptype, &mut calls);
                    match first {
                        Ok(()) => {}
                        Err(e) if e.fw_error == Some(u64::from(sys::SEV_RET_INVALID_PARAM)) => {
                            let diff = cpuid_page::diff(&sent, buf.as_slice());
                            for d in &diff {
                                log::warn!("SNP CPUID page at {gpa:#x}: {d}");
                            }
                            cpuid_corrections.extend(diff);
                            update_range(p, gpa, Some(buf.as_mut_slice()), 1, ptype, &mut calls)?;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            PageKind::Normal | PageKind::Unmeasured | PageKind::Secrets => {
                let mut buf = PageBuffer::from_import(imp);
                update_range(
                    p,
                    imp.gpa,
                    Some(buf.as_mut_slice()),
                    pages,
                    ptype,
                    &mut calls,
                )?;
            }
        }
    }

    let supported = match supported {
        Some(s) => s,
        None => p.supported_cpuid()?,
    };
    for (i, r) in regs.iter().enumerate() {
        p.create_vcpu(i as u32)?;
        p.set_vcpu_cpuid(i as u32, &supported)?;
        p.set_vcpu_registers(i as u32, r)?;
    }
    let (id_block, id_auth, author_key) = match &plan.id_block {
        Some(b) => (
            Some(b.id_block.as_slice()),
            Some(b.id_auth.as_slice()),
            b.author_key_enabled,
        ),
        None => (None, None, false),
    };
    p.launch_finish(&LaunchFinish {
        id_block,
        id_auth,
        author_key,
        host_data: plan.host_data,
    })?;
    Ok(SnpLaunched {
        policy,
        slots,
        update_calls: calls,
        cpuid_corrections,
    })
}

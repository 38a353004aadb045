//! The TDX launch driver: replays a [`LaunchPlan`] through any [`TdxPlatform`] - KVM or the
//! model - in the order upstream KVM requires (platform.md, "TDX on upstream KVM").

use kvm_bindings::{KVM_CPUID_FLAG_SIGNIFCANT_INDEX, kvm_cpuid_entry2};
use veil_firmware::plan::{PAGE_SIZE, PageKind};
use veil_firmware::{LaunchPlan, Platform};

use super::{CapabilitiesReply, InitVm, TdxCapabilities, TdxPlatform, hob};
use crate::error::LaunchError;
use crate::layout;
use crate::model_memory::RangeSet;
use crate::pages::PageBuffer;
use crate::platform::{CommandError, SlotSpec};
use crate::sys::tdx as sys;

/// XFAM Veil asks for unless told otherwise: x87, SSE, AVX.
pub const DEFAULT_XFAM: u64 = 0x7;

/// Choices the plan leaves to the launcher.
#[derive(Debug, Clone)]
pub struct TdxOptions {
    /// TD attributes (default: the plan's policy, else SEPT_VE_DISABLE).
    pub attributes: Option<u64>,
    /// XFAM (default: x87 | SSE | AVX as far as supported).
    pub xfam: Option<u64>,
    /// MRCONFIGID.
    pub mrconfigid: [u8; 48],
    /// MROWNER.
    pub mrowner: [u8; 48],
    /// MROWNERCONFIG.
    pub mrownerconfig: [u8; 48],
}

impl Default for TdxOptions {
    fn default() -> Self {
        TdxOptions {
            attributes: None,
            xfam: None,
            mrconfigid: [0; 48],
            mrowner: [0; 48],
            mrownerconfig: [0; 48],
        }
    }
}

/// What the launch did.
#[derive(Debug, Clone)]
pub struct TdxLaunched {
    /// TD attributes used.
    pub attributes: u64,
    /// XFAM used.
    pub xfam: u64,
    /// GPA of the TD HOB (none for payloads, like IGVM files, that learn their memory from
    /// their own parameters).
    pub td_hob: Option<u64>,
    /// The memory slots created.
    pub slots: Vec<SlotSpec>,
}

/// `KVM_TDX_CAPABILITIES`, growing the CPUID array on `-E2BIG`.
pub fn capabilities<P: TdxPlatform>(p: &mut P) -> Result<TdxCapabilities, CommandError> {
    let mut room = 64u32;
    for _ in 0..4 {
        match p.capabilities(room)? {
            CapabilitiesReply::Caps(c) => return Ok(c),
            CapabilitiesReply::TooSmall { needed } if needed > room => room = needed,
            CapabilitiesReply::TooSmall { .. } => room = room.saturating_mul(2),
        }
    }
    Err(CommandError::new(
        "KVM_TDX_CAPABILITIES",
        libc::E2BIG,
        format!("still -E2BIG with room for {room} CPUID entries"),
    ))
}

/// The TD's CPUID: KVM's supported values masked by what the TDX module lets the VMM configure.
pub fn td_cpuid(caps: &TdxCapabilities, supported: &[kvm_cpuid_entry2]) -> Vec<kvm_cpuid_entry2> {
    caps.cpuid
        .iter()
        .filter_map(|c| {
            let s = supported.iter().find(|s| {
                s.function == c.function
                    && (s.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0 || s.index == c.index)
            })?;
            Some(kvm_cpuid_entry2 {
                function: c.function,
                index: c.index,
                flags: c.flags,
                eax: s.eax & c.eax,
                ebx: s.ebx & c.ebx,
                ecx: s.ecx & c.ecx,
                edx: s.edx & c.edx,
                ..Default::default()
            })
        })
        .collect()
}

fn check_plan(plan: &LaunchPlan) -> Result<Option<u64>, LaunchError> {
    if plan.platform != Platform::Tdx {
        return Err(LaunchError::WrongPlatform {
            plan: plan.platform,
            backend: Platform::Tdx,
        });
    }
    if plan.vcpus.is_empty() {
        return Err(LaunchError::NoVcpus);
    }
    if let Some(i) = plan
        .imports
        .iter()
        .find(|i| matches!(i.kind, PageKind::Secrets | PageKind::Cpuid))
    {
        return Err(LaunchError::KindNotOnPlatform {
            platform: Platform::Tdx,
            kind: i.kind.name(),
            label: i.label.clone(),
            gpa: i.gpa,
        });
    }
    if let Some(h) = plan.td_hob {
        if !plan.imports.iter().any(|i| i.gpa == h) {
            return Err(LaunchError::NoTdHob);
        }
    }
    Ok(plan.td_hob)
}

/// Launches `plan` on `p`: CAPABILITIES, INIT_VM, page-state exits, private guest_memfd slots,
/// vCPUs (CPUID, INIT_VCPU with the TD HOB), INIT_MEM_REGION per import (MEASURE where the plan
/// measures), FINALIZE_VM.
pub fn launch<P: TdxPlatform>(
    p: &mut P,
    plan: &LaunchPlan,
    opts: &TdxOptions,
) -> Result<TdxLaunched, LaunchError> {
    let td_hob = check_plan(plan)?;
    let caps = capabilities(p)?;
    let attributes = opts
        .attributes
        .or(plan.policy)
        .unwrap_or(sys::TD_ATTR_SEPT_VE_DISABLE);
    if attributes & !caps.supported_attrs != 0 {
        return Err(LaunchError::Invalid(format!(
            "TD attributes {attributes:#x} include bits {:#x} this TDX module does not support \
             (supported {:#x})",
            attributes & !caps.supported_attrs,
            caps.supported_attrs
        )));
    }
    let xfam = opts
        .xfam
        .unwrap_or((DEFAULT_XFAM & caps.supported_xfam) | sys::XFAM_FIXED1);
    if xfam & !caps.supported_xfam != 0 {
        return Err(LaunchError::Invalid(format!(
            "XFAM {xfam:#x} includes bits {:#x} this TDX module does not support (supported {:#x})",
            xfam & !caps.supported_xfam,
            caps.supported_xfam
        )));
    }
    let supported = p.supported_cpuid()?;
    let cpuid = td_cpuid(&caps, &supported);
    let init = InitVm {
        attributes,
        xfam,
        mrconfigid: opts.mrconfigid,
        mrowner: opts.mrowner,
        mrownerconfig: opts.mrownerconfig,
        cpuid: cpuid.clone(),
    };
    let mut tries = 0;
    loop {
        match p.init_vm(&init) {
            Ok(()) => break,
            Err(e) if e.errno == libc::EAGAIN && tries < 1000 => tries += 1,
            Err(e) => return Err(e.into()),
        }
    }
    p.enable_page_state_exits()?;
    let slots = layout::slots(plan);
    for s in &slots {
        p.add_slot(*s)?;
        p.set_memory_attributes(s.gpa, s.size, true)?;
    }
    for i in 0..plan.vcpus.len() as u32 {
        p.create_vcpu(i)?;
        p.set_vcpu_cpuid(i, &cpuid)?;
        p.init_vcpu(i, td_hob.unwrap_or(0))?;
    }

    // Every page added at launch is accepted; the rest of RAM is unaccepted memory for TDVF.
    let mut added = RangeSet::default();
    for imp in &plan.imports {
        added.insert(imp.gpa, imp.gpa + imp.size);
    }
    let hob_bytes = td_hob.map(|gpa| hob::build(gpa, &hob::resources(&plan.memory, &added)));
    for imp in &plan.imports {
        let mut buf = PageBuffer::from_import(imp);
        if let (Some(td_hob), Some(hob_bytes)) = (td_hob.filter(|h| *h == imp.gpa), &hob_bytes) {
            if hob_bytes.len() as u64 > imp.size {
                return Err(LaunchError::HobTooLarge {
                    need: hob_bytes.len(),
                    room: imp.size,
                    gpa: td_hob,
                });
            }
            buf.as_mut_slice()[..hob_bytes.len()].copy_from_slice(hob_bytes);
        }
        let measure = imp.kind != PageKind::Unmeasured;
        let pages = imp.pages();
        let mut done = 0u64;
        let mut again = 0u32;
        while done < pages {
            let src = &buf.as_slice()[(done * PAGE_SIZE) as usize..];
            match p.init_mem_region(0, src, imp.gpa + done * PAGE_SIZE, pages - done, measure) {
                Ok(0) => {
                    return Err(CommandError::new(
                        "KVM_TDX_INIT_MEM_REGION",
                        libc::EIO,
                        format!("no progress at GPA {:#x}", imp.gpa + done * PAGE_SIZE),
                    )
                    .into());
                }
                Ok(n) => done += n.min(pages - done),
                Err(e) if (e.errno == libc::EAGAIN || e.errno == libc::EINTR) && again < 1000 => {
                    again += 1
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    p.finalize()?;
    Ok(TdxLaunched {
        attributes,
        xfam,
        td_hob,
        slots,
    })
}

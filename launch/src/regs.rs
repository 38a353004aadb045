//! The register state Veil hands KVM for a vCPU before launch, derived from a plan's
//! [`VcpuState`] (which is written in the VMCB/VMSA's terms).
//!
//! The same [`VcpuRegisters`] go to `KVM_SET_REGS`/`SREGS`/`FPU`/`XCRS`/`DEBUGREGS`/`MSRS` on a
//! real vCPU, and to the SNP model, which builds the VMSA from them the way KVM does.

use kvm_bindings::{
    kvm_debugregs, kvm_dtable, kvm_fpu, kvm_regs, kvm_segment, kvm_sregs, kvm_xcrs,
};
use veil_firmware::plan::{Segment, VcpuState};

/// `MSR_IA32_CR_PAT`.
pub const MSR_IA32_CR_PAT: u32 = 0x277;
/// `EFER.SVME`: KVM sets it in the VMCB itself, and refuses it from userspace without nested SVM.
pub const EFER_SVME: u64 = 1 << 12;
/// The local APIC's default base, enabled (BSP flag added for vCPU 0).
const APIC_BASE_ENABLED: u64 = 0xfee0_0000 | (1 << 11);
const APIC_BASE_BSP: u64 = 1 << 8;

/// Everything set on a vCPU before launch.
#[derive(Debug, Clone, Default)]
pub struct VcpuRegisters {
    /// `KVM_SET_REGS`.
    pub regs: kvm_regs,
    /// `KVM_SET_SREGS`.
    pub sregs: kvm_sregs,
    /// `KVM_SET_FPU`.
    pub fpu: kvm_fpu,
    /// `KVM_SET_XCRS` (XCR0 only).
    pub xcr0: u64,
    /// `KVM_SET_DEBUGREGS` (DR6, DR7).
    pub dr6: u64,
    #[allow(missing_docs)]
    pub dr7: u64,
    /// `KVM_SET_MSRS`: (index, value).
    pub msrs: Vec<(u32, u64)>,
}

/// A plan's vCPU state that KVM's register interface cannot express.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("vCPU {vcpu}: {what} cannot be set through KVM's register interface ({why})")]
pub struct UnrepresentableState {
    /// The vCPU index.
    pub vcpu: usize,
    /// The register.
    pub what: &'static str,
    /// Why.
    pub why: String,
}

fn segment(s: &Segment) -> kvm_segment {
    let a = s.attrib;
    let present = ((a >> 7) & 1) as u8;
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: (a & 0xf) as u8,
        s: ((a >> 4) & 1) as u8,
        dpl: ((a >> 5) & 3) as u8,
        present,
        avl: ((a >> 8) & 1) as u8,
        l: ((a >> 9) & 1) as u8,
        db: ((a >> 10) & 1) as u8,
        g: ((a >> 11) & 1) as u8,
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

fn dtable(
    vcpu: usize,
    what: &'static str,
    s: &Segment,
) -> Result<kvm_dtable, UnrepresentableState> {
    if s.selector != 0 || s.attrib != 0 {
        return Err(UnrepresentableState {
            vcpu,
            what,
            why: format!(
                "selector {:#x} and attributes {:#x} must be zero: KVM_SET_SREGS sets only base \
                 and limit",
                s.selector, s.attrib
            ),
        });
    }
    let limit = u16::try_from(s.limit).map_err(|_| UnrepresentableState {
        vcpu,
        what,
        why: format!("limit {:#x} does not fit in 16 bits", s.limit),
    })?;
    Ok(kvm_dtable {
        base: s.base,
        limit,
        padding: [0; 3],
    })
}

impl VcpuRegisters {
    /// The registers that make KVM's vCPU `index` hold `s`.
    pub fn from_state(index: usize, s: &VcpuState) -> Result<Self, UnrepresentableState> {
        let regs = kvm_regs {
            rax: s.rax,
            rbx: s.rbx,
            rcx: s.rcx,
            rdx: s.rdx,
            rsi: s.rsi,
            rdi: s.rdi,
            rsp: s.rsp,
            rbp: s.rbp,
            rip: s.rip,
            rflags: s.rflags,
            ..Default::default()
        };
        let sregs = kvm_sregs {
            cs: segment(&s.cs),
            ds: segment(&s.ds),
            es: segment(&s.es),
            fs: segment(&s.fs),
            gs: segment(&s.gs),
            ss: segment(&s.ss),
            tr: segment(&s.tr),
            ldt: segment(&s.ldtr),
            gdt: dtable(index, "GDTR", &s.gdtr)?,
            idt: dtable(index, "IDTR", &s.idtr)?,
            cr0: s.cr0,
            cr3: s.cr3,
            cr4: s.cr4,
            efer: s.efer & !EFER_SVME,
            apic_base: APIC_BASE_ENABLED | if index == 0 { APIC_BASE_BSP } else { 0 },
            ..Default::default()
        };
        let fpu = kvm_fpu {
            fcw: s.x87_fcw,
            mxcsr: s.mxcsr,
            ..Default::default()
        };
        Ok(VcpuRegisters {
            regs,
            sregs,
            fpu,
            xcr0: s.xcr0,
            dr6: s.dr6,
            dr7: s.dr7,
            msrs: vec![(MSR_IA32_CR_PAT, s.g_pat)],
        })
    }

    /// `KVM_SET_XCRS` argument.
    pub fn xcrs(&self) -> kvm_xcrs {
        let mut x = kvm_xcrs {
            nr_xcrs: 1,
            ..Default::default()
        };
        x.xcrs[0].xcr = 0;
        x.xcrs[0].value = self.xcr0;
        x
    }

    /// `KVM_SET_DEBUGREGS` argument.
    pub fn debugregs(&self) -> kvm_debugregs {
        kvm_debugregs {
            dr6: self.dr6,
            dr7: self.dr7,
            ..Default::default()
        }
    }
}

//! The model's VMSA: what KVM writes into a vCPU's VMSA at `SNP_LAUNCH_FINISH`, rebuilt from
//! the registers userspace set (Linux `sev_es_sync_vmsa` copies the VMCB save area, which
//! `svm_set_segment`/`svm_set_cr0`/`svm_set_cr4`/`svm_set_efer` filled, then the GPRs, XCR0,
//! DR6, the SEV features and the x87/SSE state).
//!
//! Written from KVM's side on purpose: the launch digest the model computes this way is an
//! independent check of `veil_firmware::measure::vmsa`, which builds the page from the plan.

use kvm_bindings::kvm_segment;

use crate::regs::{EFER_SVME, MSR_IA32_CR_PAT, VcpuRegisters};
use crate::sys::snp::SEV_FEAT_SNP_ACTIVE;

/// `X86_CR0_CD | X86_CR0_NW`: KVM clears them (quirk `KVM_X86_QUIRK_CD_NW_CLEARED`, on by
/// default) when it writes CR0 into the VMCB.
const CR0_CD_NW: u64 = (1 << 30) | (1 << 29);
/// `X86_CR4_MCE`: KVM keeps the host's CR4.MCE in the VMCB (every x86-64 Linux host sets it).
const CR4_MCE: u64 = 1 << 6;
/// KVM's reset value of the VMCB's PAT (`MSR_IA32_CR_PAT_DEFAULT`).
const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;
/// `DR7_FIXED_1`.
pub const DR7_FIXED_1: u64 = 0x400;

fn vmcb_attrib(s: &kvm_segment) -> u16 {
    let present = s.present != 0 && s.unusable == 0;
    u16::from(s.type_ & 0xf)
        | (u16::from(s.s & 1) << 4)
        | (u16::from(s.dpl & 3) << 5)
        | (u16::from(present) << 7)
        | (u16::from(s.avl & 1) << 8)
        | (u16::from(s.l & 1) << 9)
        | (u16::from(s.db & 1) << 10)
        | (u16::from(s.g & 1) << 11)
}

struct Page<'a>(&'a mut [u8; 4096]);

impl Page<'_> {
    fn u64(&mut self, at: usize, v: u64) {
        self.0[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, at: usize, v: u32) {
        self.0[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn u16(&mut self, at: usize, v: u16) {
        self.0[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn seg(&mut self, at: usize, selector: u16, attrib: u16, limit: u32, base: u64) {
        self.u16(at, selector);
        self.u16(at + 2, attrib);
        self.u32(at + 4, limit);
        self.u64(at + 8, base);
    }
}

/// Builds the VMSA of a vCPU whose registers are `r`, in a VM whose `KVM_SEV_INIT2` asked for
/// `vmsa_features`.
pub fn build(r: &VcpuRegisters, vmsa_features: u64) -> Box<[u8; 4096]> {
    let mut buf = Box::new([0u8; 4096]);
    let mut p = Page(&mut buf);
    let s = &r.sregs;
    for (at, seg) in [
        (0x00, &s.es),
        (0x10, &s.cs),
        (0x20, &s.ss),
        (0x30, &s.ds),
        (0x40, &s.fs),
        (0x50, &s.gs),
    ] {
        p.seg(at, seg.selector, vmcb_attrib(seg), seg.limit, seg.base);
    }
    // GDTR and IDTR: KVM_SET_SREGS sets base and limit; selector and attributes stay zero.
    p.seg(0x60, 0, 0, u32::from(s.gdt.limit), s.gdt.base);
    p.seg(
        0x70,
        s.ldt.selector,
        vmcb_attrib(&s.ldt),
        s.ldt.limit,
        s.ldt.base,
    );
    p.seg(0x80, 0, 0, u32::from(s.idt.limit), s.idt.base);
    p.seg(
        0x90,
        s.tr.selector,
        vmcb_attrib(&s.tr),
        s.tr.limit,
        s.tr.base,
    );
    // CPL follows SS.DPL.
    p.0[0xcb] = s.ss.dpl & 3;
    p.u64(0xd0, s.efer | EFER_SVME);
    p.u64(0x148, s.cr4 | CR4_MCE);
    p.u64(0x150, s.cr3);
    p.u64(0x158, s.cr0 & !CR0_CD_NW);
    p.u64(0x160, r.dr7);
    p.u64(0x168, r.dr6);
    p.u64(0x170, r.regs.rflags);
    p.u64(0x178, r.regs.rip);
    p.u64(0x1d8, r.regs.rsp);
    p.u64(0x1f8, r.regs.rax);
    let pat = r
        .msrs
        .iter()
        .rev()
        .find(|(i, _)| *i == MSR_IA32_CR_PAT)
        .map_or(PAT_DEFAULT, |m| m.1);
    p.u64(0x268, pat);
    for (at, v) in [
        (0x308, r.regs.rcx),
        (0x310, r.regs.rdx),
        (0x318, r.regs.rbx),
        (0x328, r.regs.rbp),
        (0x330, r.regs.rsi),
        (0x338, r.regs.rdi),
        (0x340, r.regs.r8),
        (0x348, r.regs.r9),
        (0x350, r.regs.r10),
        (0x358, r.regs.r11),
        (0x360, r.regs.r12),
        (0x368, r.regs.r13),
        (0x370, r.regs.r14),
        (0x378, r.regs.r15),
    ] {
        p.u64(at, v);
    }
    p.u64(0x3b0, vmsa_features | SEV_FEAT_SNP_ACTIVE);
    p.u64(0x3e8, r.xcr0);
    // x87/SSE state from the FPU (KVM syncs it for KVM_SEV_INIT2 VMs).
    let f = &r.fpu;
    p.u64(0x400, f.last_dp);
    p.u32(0x408, f.mxcsr);
    p.u16(0x40c, u16::from(f.ftwx));
    p.u16(0x40e, f.fsw);
    p.u16(0x410, f.fcw);
    p.u16(0x412, f.last_opcode);
    p.u64(0x418, f.last_ip);
    for (i, st) in f.fpr.iter().enumerate() {
        p.0[0x420 + i * 10..0x420 + i * 10 + 10].copy_from_slice(&st[..10]);
    }
    for (i, x) in f.xmm.iter().enumerate() {
        p.0[0x470 + i * 16..0x470 + i * 16 + 16].copy_from_slice(x);
    }
    buf
}

//! A vCPU's registers formatted for people, printed when a guest crashes.

use std::fmt::Write;

use kvm_bindings::kvm_segment;
use kvm_ioctls::VcpuFd;

fn segment(out: &mut String, name: &str, s: &kvm_segment) {
    let _ = writeln!(
        out,
        "  {name:<4} sel={:#06x} base={:#018x} limit={:#010x} type={:#x} p={} dpl={} db={} s={} l={} g={}",
        s.selector, s.base, s.limit, s.type_, s.present, s.dpl, s.db, s.s, s.l, s.g
    );
}

/// The general-purpose, segment and control registers of `vcpu` (what KVM lets us read).
pub(crate) fn registers(vcpu: &VcpuFd) -> String {
    let mut out = String::new();
    match vcpu.get_regs() {
        Ok(r) => {
            let _ = writeln!(
                out,
                "  rip={:#018x} rflags={:#018x}\n  rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}\n  rsi={:#018x} rdi={:#018x} rsp={:#018x} rbp={:#018x}\n  r8 ={:#018x} r9 ={:#018x} r10={:#018x} r11={:#018x}\n  r12={:#018x} r13={:#018x} r14={:#018x} r15={:#018x}",
                r.rip,
                r.rflags,
                r.rax,
                r.rbx,
                r.rcx,
                r.rdx,
                r.rsi,
                r.rdi,
                r.rsp,
                r.rbp,
                r.r8,
                r.r9,
                r.r10,
                r.r11,
                r.r12,
                r.r13,
                r.r14,
                r.r15
            );
        }
        Err(e) => {
            let _ = writeln!(out, "  KVM_GET_REGS failed: {e}");
        }
    }
    match vcpu.get_sregs() {
        Ok(s) => {
            let _ = writeln!(
                out,
                "  cr0={:#018x} cr2={:#018x} cr3={:#018x} cr4={:#018x}\n  cr8={:#018x} efer={:#018x} apic_base={:#018x}",
                s.cr0, s.cr2, s.cr3, s.cr4, s.cr8, s.efer, s.apic_base
            );
            for (name, seg) in [
                ("cs", &s.cs),
                ("ds", &s.ds),
                ("es", &s.es),
                ("fs", &s.fs),
                ("gs", &s.gs),
                ("ss", &s.ss),
                ("tr", &s.tr),
                ("ldt", &s.ldt),
            ] {
                segment(&mut out, name, seg);
            }
            let _ = writeln!(
                out,
                "  gdt base={:#018x} limit={:#06x}  idt base={:#018x} limit={:#06x}",
                s.gdt.base, s.gdt.limit, s.idt.base, s.idt.limit
            );
        }
        Err(e) => {
            let _ = writeln!(out, "  KVM_GET_SREGS failed: {e}");
        }
    }
    out
}

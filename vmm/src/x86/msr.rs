//! Boot-time MSRs, FPU state and local-APIC LVT setup, the same for every vCPU.

use kvm_bindings::{Msrs, kvm_fpu, kvm_lapic_state, kvm_msr_entry};

const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
/// MISC_ENABLE: fast string operations enabled (Linux expects it on Intel).
const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRs enabled with write-back as the default type: all RAM is cacheable from the start.
const MTRR_ENABLE_WB_DEFAULT: u64 = (1 << 11) | 6;

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_LVT_MASKED: u32 = 1 << 16;

/// The MSRs every vCPU starts with.
pub fn boot_msrs() -> Msrs {
    let e = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    Msrs::from_entries(&[
        e(MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        e(MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WB_DEFAULT),
    ])
    .expect("two MSR entries are within KVM's limit")
}

/// FPU state at power-on: x87 control word 0x37f, MXCSR 0x1f80 (all exceptions masked).
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

fn lapic_reg(state: &kvm_lapic_state, offset: usize) -> u32 {
    let b = &state.regs[offset..offset + 4];
    u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
}

fn set_lapic_reg(state: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (dst, src) in state.regs[offset..offset + 4]
        .iter_mut()
        .zip(value.to_le_bytes())
    {
        *dst = src as _;
    }
}

/// Wires LINT1 as NMI, as the MP table and MADT say. LINT0 stays masked: there is no 8259 PIC
/// to deliver ExtINT through it.
pub fn set_lint_modes(state: &mut kvm_lapic_state) {
    let with_mode = |v: u32, mode: u32| (v & !0x700) | (mode << 8);
    let lvt0 = lapic_reg(state, APIC_LVT0);
    set_lapic_reg(state, APIC_LVT0, lvt0 | APIC_LVT_MASKED);
    let lvt1 = lapic_reg(state, APIC_LVT1);
    set_lapic_reg(state, APIC_LVT1, with_mode(lvt1, APIC_MODE_NMI));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lint_modes_keep_other_bits() {
        let mut s = kvm_lapic_state::default();
        set_lapic_reg(&mut s, APIC_LVT0, 0x0000_0700);
        set_lint_modes(&mut s);
        assert_eq!(lapic_reg(&s, APIC_LVT0), 0x0001_0700);
        assert_eq!(lapic_reg(&s, APIC_LVT1), 0x0000_0400);
    }

    #[test]
    fn boot_msrs_enable_write_back_mtrrs() {
        let m = boot_msrs();
        let def = m.as_slice().iter().find(|e| e.index == 0x2ff).unwrap();
        assert_eq!(def.data, 0x806);
    }
}

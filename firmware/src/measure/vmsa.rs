//! The SEV-SNP VMSA page as KVM builds it at `SNP_LAUNCH_FINISH` from a vCPU's register state.
//!
//! Field offsets follow the SEV-ES save area (AMD APM vol. 2, table B-4; the kernel's
//! `struct sev_es_save_area`). KVM with QEMU fills segments, control and debug registers,
//! RFLAGS, RIP, the general registers, PAT, XCR0, MXCSR and the x87 control word from the
//! vCPU, and `sev_features` from `KVM_SEV_INIT2`'s `vmsa_features`; everything else is zero.

use crate::plan::{Segment, VcpuState};

/// Size of a VMSA page.
pub const VMSA_SIZE: usize = 4096;

const SEGMENTS: [usize; 10] = [0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90];
const EFER: usize = 0xd0;
const CR4: usize = 0x148;
const CR3: usize = 0x150;
const CR0: usize = 0x158;
const DR7: usize = 0x160;
const DR6: usize = 0x168;
const RFLAGS: usize = 0x170;
const RIP: usize = 0x178;
const RSP: usize = 0x1d8;
const RAX: usize = 0x1f8;
const G_PAT: usize = 0x268;
const RCX: usize = 0x308;
const RDX: usize = 0x310;
const RBX: usize = 0x318;
const RBP: usize = 0x328;
const RSI: usize = 0x330;
const RDI: usize = 0x338;
const SEV_FEATURES: usize = 0x3b0;
const XCR0: usize = 0x3e8;
const MXCSR: usize = 0x408;
const X87_FCW: usize = 0x410;

fn segments(s: &VcpuState) -> [&Segment; 10] {
    [
        &s.es, &s.cs, &s.ss, &s.ds, &s.fs, &s.gs, &s.gdtr, &s.ldtr, &s.idtr, &s.tr,
    ]
}

fn put64(page: &mut [u8], at: usize, v: u64) {
    page[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get64(page: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&page[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Builds the VMSA KVM measures for a vCPU in state `s` with `sev_features`.
pub fn build(s: &VcpuState, sev_features: u64) -> Box<[u8; VMSA_SIZE]> {
    let mut p = Box::new([0u8; VMSA_SIZE]);
    for (seg, at) in segments(s).into_iter().zip(SEGMENTS) {
        p[at..at + 2].copy_from_slice(&seg.selector.to_le_bytes());
        p[at + 2..at + 4].copy_from_slice(&seg.attrib.to_le_bytes());
        p[at + 4..at + 8].copy_from_slice(&seg.limit.to_le_bytes());
        put64(&mut p[..], at + 8, seg.base);
    }
    for (at, v) in [
        (EFER, s.efer),
        (CR4, s.cr4),
        (CR3, s.cr3),
        (CR0, s.cr0),
        (DR7, s.dr7),
        (DR6, s.dr6),
        (RFLAGS, s.rflags),
        (RIP, s.rip),
        (RSP, s.rsp),
        (RAX, s.rax),
        (G_PAT, s.g_pat),
        (RCX, s.rcx),
        (RDX, s.rdx),
        (RBX, s.rbx),
        (RBP, s.rbp),
        (RSI, s.rsi),
        (RDI, s.rdi),
        (SEV_FEATURES, sev_features),
        (XCR0, s.xcr0),
    ] {
        put64(&mut p[..], at, v);
    }
    p[MXCSR..MXCSR + 4].copy_from_slice(&s.mxcsr.to_le_bytes());
    p[X87_FCW..X87_FCW + 2].copy_from_slice(&s.x87_fcw.to_le_bytes());
    p
}

/// Reads back the register state and SEV features from a VMSA page (e.g. an IGVM VP context).
///
/// Only the fields [`build`] writes are read; [`build`] of the result reproduces `page` exactly
/// when the page holds nothing else, which is how KVM's rules are checked.
pub fn parse(page: &[u8; VMSA_SIZE]) -> (VcpuState, u64) {
    let seg = |at: usize| Segment {
        selector: u16::from_le_bytes([page[at], page[at + 1]]),
        attrib: u16::from_le_bytes([page[at + 2], page[at + 3]]),
        limit: u32::from_le_bytes([page[at + 4], page[at + 5], page[at + 6], page[at + 7]]),
        base: get64(page, at + 8),
    };
    let s = VcpuState {
        es: seg(SEGMENTS[0]),
        cs: seg(SEGMENTS[1]),
        ss: seg(SEGMENTS[2]),
        ds: seg(SEGMENTS[3]),
        fs: seg(SEGMENTS[4]),
        gs: seg(SEGMENTS[5]),
        gdtr: seg(SEGMENTS[6]),
        ldtr: seg(SEGMENTS[7]),
        idtr: seg(SEGMENTS[8]),
        tr: seg(SEGMENTS[9]),
        efer: get64(page, EFER),
        cr4: get64(page, CR4),
        cr3: get64(page, CR3),
        cr0: get64(page, CR0),
        dr7: get64(page, DR7),
        dr6: get64(page, DR6),
        rflags: get64(page, RFLAGS),
        rip: get64(page, RIP),
        rsp: get64(page, RSP),
        rax: get64(page, RAX),
        g_pat: get64(page, G_PAT),
        rcx: get64(page, RCX),
        rdx: get64(page, RDX),
        rbx: get64(page, RBX),
        rbp: get64(page, RBP),
        rsi: get64(page, RSI),
        rdi: get64(page, RDI),
        xcr0: get64(page, XCR0),
        mxcsr: u32::from_le_bytes([
            page[MXCSR],
            page[MXCSR + 1],
            page[MXCSR + 2],
            page[MXCSR + 3],
        ]),
        x87_fcw: u16::from_le_bytes([page[X87_FCW], page[X87_FCW + 1]]),
    };
    (s, get64(page, SEV_FEATURES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_state_round_trips_through_the_page() {
        let s = VcpuState::reset(0xffff_fff0, 0x00a0_0f11);
        let page = build(&s, 1);
        assert_eq!(&page[0x10..0x12], &0xf000u16.to_le_bytes());
        assert_eq!(get64(&page[..], 0x18), 0xffff_0000);
        assert_eq!(get64(&page[..], RIP), 0xfff0);
        let (back, features) = parse(&page);
        assert_eq!(back, s);
        assert_eq!(features, 1);
        assert_eq!(*build(&back, features), *page);
    }
}

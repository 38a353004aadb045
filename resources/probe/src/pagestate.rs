//! `pagestate`: the page-state hypercall confidential guests use to convert memory between
//! private and shared, `KVM_HC_MAP_GPA_RANGE` (number 12; RBX = GPA, RCX = pages, RDX =
//! attributes, bit 4 = encrypted), issued from ring 0 for one page the probe owns: first to
//! shared, then back to private. KVM forwards it to the VMM only when the VMM enabled
//! `KVM_CAP_EXIT_HYPERCALL` for it; otherwise KVM answers `-KVM_ENOSYS` (-1000) itself.
//!
//! Ring 3 cannot make KVM hypercalls (KVM answers `-KVM_EPERM` below CPL0), so the probe
//! executes `clts`, which faults at CPL3; the #GP handler in `entry.rs` makes the hypercall at
//! CPL0 with ring 3's RAX, RBX, RCX, RDX (RSI picks `vmmcall` for AMD, else `vmcall`) and
//! returns past the `clts` with the result in RAX.

use core::arch::asm;
use core::arch::x86_64::__cpuid;

use crate::checks::Why;
use crate::{info, println};

/// `KVM_HC_MAP_GPA_RANGE`.
const MAP_GPA_RANGE: u64 = 12;
/// `KVM_MAP_GPA_RANGE_ENCRYPTED`: the range becomes private.
const ENCRYPTED: u64 = 1 << 4;
/// KVM's own answer when the exit to userspace is not enabled.
const KVM_ENOSYS: i64 = -1000;
/// KVM's answer to a hypercall from outside ring 0.
const KVM_EPERM: i64 = -1;

/// Whether the CPU is AMD's (or Hygon's): `vmmcall` instead of `vmcall`.
fn amd() -> bool {
    let l = __cpuid(0);
    let mut v = [0u8; 12];
    v[..4].copy_from_slice(&l.ebx.to_le_bytes());
    v[4..8].copy_from_slice(&l.edx.to_le_bytes());
    v[8..].copy_from_slice(&l.ecx.to_le_bytes());
    &v == b"AuthenticAMD" || &v == b"HygonGenuine"
}

/// `KVM_HC_MAP_GPA_RANGE(gpa, pages, attrs)` from ring 0; KVM's or the VMM's answer.
fn map_gpa_range(gpa: u64, pages: u64, attrs: u64, amd: bool) -> i64 {
    let ret: u64;
    // SAFETY: `clts` at CPL3 raises #GP, which entry.rs turns into the hypercall and a return
    // past the instruction; RBX (reserved by the compiler) is swapped in and restored around
    // it, and the handler changes no register but RAX.
    unsafe {
        asm!(
            "xchg {gpa}, rbx",
            "clts",
            "xchg {gpa}, rbx",
            gpa = inout(reg) gpa => _,
            inout("rax") MAP_GPA_RANGE => ret,
            in("rcx") pages,
            in("rdx") attrs,
            in("rsi") u64::from(amd),
        );
    }
    ret as i64
}

/// Converts one probe-owned page to shared and back to private, and reports who answered.
pub fn check() -> Result<(), Why> {
    let page = crate::virtio::dma(4096)?;
    let amd = amd();
    info!("pagestate_gpa", "{:#x}", page);
    info!(
        "pagestate_insn",
        "{}",
        if amd { "vmmcall" } else { "vmcall" }
    );
    let shared = map_gpa_range(page, 1, 0, amd);
    info!("pagestate_shared_ret", "{}", shared);
    let private = map_gpa_range(page, 1, ENCRYPTED, amd);
    info!("pagestate_private_ret", "{}", private);
    for ret in [shared, private] {
        match ret {
            KVM_ENOSYS => {
                return Err(Why::Text(
                    "KVM answered -KVM_ENOSYS (-1000): page-state exits are not enabled, the \
                     hypercall never reached the VMM",
                ));
            }
            KVM_EPERM => return Err(Why::Text("KVM answered -KVM_EPERM: not issued from CPL0")),
            _ => {}
        }
    }
    println!(
        "PROBE ok pagestate: the VMM answered {shared} (to shared) and {private} (to private)"
    );
    Ok(())
}

//! Initial registers for each boot protocol.

use kvm_bindings::{kvm_regs, kvm_sregs};

use super::gdt::{self, CODE32_SELECTOR, CODE64_SELECTOR, DATA_SELECTOR, GDT_ADDR, IDT_ADDR};
use super::paging::PML4_ADDR;

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// Top of the boot stack the 64-bit Linux protocol entry gets (in the free page at `0x8000`).
pub const BOOT_STACK: u64 = 0x8ff0;

/// How the BSP enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    /// PVH: 32-bit protected mode, paging off, `EBX` = `hvm_start_info`.
    Pvh {
        /// Entry point from the PVH note.
        entry: u64,
        /// Address of `hvm_start_info`.
        start_info: u64,
    },
    /// 64-bit Linux boot protocol: long mode on the boot page tables, `RSI` = `boot_params`.
    Linux64 {
        /// 64-bit entry point.
        entry: u64,
        /// Address of `boot_params`.
        boot_params: u64,
    },
}

/// The general-purpose registers at entry.
pub fn regs(mode: EntryMode) -> kvm_regs {
    let mut r = kvm_regs {
        rflags: 0x2,
        ..Default::default()
    };
    match mode {
        EntryMode::Pvh { entry, start_info } => {
            r.rip = entry;
            r.rbx = start_info;
        }
        EntryMode::Linux64 { entry, boot_params } => {
            r.rip = entry;
            r.rsi = boot_params;
            r.rsp = BOOT_STACK;
            r.rbp = BOOT_STACK;
        }
    }
    r
}

/// The system registers at entry, starting from the vCPU's reset state `base`.
pub fn sregs(mut s: kvm_sregs, mode: EntryMode) -> kvm_sregs {
    s.gdt.base = GDT_ADDR;
    s.gdt.limit = 4 * 8 - 1;
    s.idt.base = IDT_ADDR;
    s.idt.limit = 0;
    let data = gdt::segment(DATA_SELECTOR);
    s.ds = data;
    s.es = data;
    s.fs = data;
    s.gs = data;
    s.ss = data;
    match mode {
        EntryMode::Pvh { .. } => {
            s.cs = gdt::segment(CODE32_SELECTOR);
            s.cr0 = CR0_PE | CR0_ET;
            s.cr4 = 0;
            s.efer = 0;
        }
        EntryMode::Linux64 { .. } => {
            s.cs = gdt::segment(CODE64_SELECTOR);
            s.cr0 = CR0_PE | CR0_ET | CR0_PG;
            s.cr3 = PML4_ADDR;
            s.cr4 = CR4_PAE;
            s.efer = EFER_LME | EFER_LMA;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvh_enters_flat_32_bit_without_paging() {
        let mode = EntryMode::Pvh {
            entry: 0x10_0000,
            start_info: 0x6000,
        };
        let s = sregs(kvm_sregs::default(), mode);
        assert_eq!((s.cr0 & CR0_PG, s.cr0 & CR0_PE), (0, 1));
        assert_eq!((s.cs.db, s.cs.l, s.cs.selector), (1, 0, 0x08));
        assert_eq!(s.efer, 0);
        let r = regs(mode);
        assert_eq!((r.rip, r.rbx), (0x10_0000, 0x6000));
    }

    #[test]
    fn linux_enters_long_mode_with_boot_params_in_rsi() {
        let mode = EntryMode::Linux64 {
            entry: 0x10_0200,
            boot_params: 0x7000,
        };
        let s = sregs(kvm_sregs::default(), mode);
        assert_eq!((s.cs.l, s.cs.db, s.cs.selector), (1, 0, 0x10));
        assert_eq!(s.ds.selector, 0x18);
        assert_eq!(s.efer, EFER_LME | EFER_LMA);
        assert_eq!(s.cr3, 0x9000);
        let r = regs(mode);
        assert_eq!((r.rip, r.rsi), (0x10_0200, 0x7000));
    }
}

//! The allow-lists, one file per thread role, written with a few helpers so that each rule reads
//! as "syscall, and the arguments it may take". Why each syscall is allowed is in the role files
//! and in docs/security.md.
//!
//! Filters stack: a thread keeps the filters of the thread that created it and adds its own, and
//! a syscall runs only if every filter allows it. Device workers are started by the VMM thread,
//! so the VMM role allows everything the device-worker role does (see `vmm.rs`).

pub(super) mod common;
pub(super) mod stdin;
pub(super) mod vcpu;
pub(super) mod vmm;
pub(super) mod worker;

use std::collections::BTreeMap;

use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};

/// A syscall: its number and its name (for documentation checks and messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sys {
    pub nr: i64,
    pub name: &'static str,
}

/// `sys!(SYS_futex)`: the syscall `libc::SYS_futex`, named "futex".
macro_rules! sys {
    ($name:ident) => {
        $crate::seccomp::rules::Sys {
            nr: libc::$name,
            name: stringify!($name),
        }
    };
}
pub(crate) use sys;

/// An ioctl request: its number and its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ioctl {
    pub nr: u64,
    pub name: &'static str,
}

/// A syscall allow-list under construction: syscall number -> the argument rules that allow it
/// (any one rule suffices; no rules means "any arguments").
#[derive(Debug, Default, Clone)]
pub(crate) struct Rules {
    map: BTreeMap<i64, Allowed>,
    /// Names of the syscalls and ioctl requests allowed, for documentation checks.
    names: Vec<&'static str>,
}

#[derive(Debug, Clone)]
enum Allowed {
    Always,
    If(Vec<SeccompRule>),
}

impl Rules {
    fn name(&mut self, name: &'static str) {
        let name = name.strip_prefix("SYS_").unwrap_or(name);
        if !self.names.contains(&name) {
            self.names.push(name);
        }
    }

    /// Allows `syscalls` with any arguments.
    pub(crate) fn allow(&mut self, syscalls: &[Sys]) -> &mut Self {
        for sys in syscalls {
            self.map.insert(sys.nr, Allowed::Always);
            self.name(sys.name);
        }
        self
    }

    /// Allows `syscall` when all of `conds` hold (in addition to its other rules).
    pub(crate) fn allow_if(&mut self, syscall: Sys, conds: Vec<SeccompCondition>) -> &mut Self {
        self.name(syscall.name);
        self.add_rule(syscall.nr, conds)
    }

    fn add_rule(&mut self, nr: i64, conds: Vec<SeccompCondition>) -> &mut Self {
        let rule = SeccompRule::new(conds).expect("every allow_if call names a condition");
        match self.map.entry(nr).or_insert(Allowed::If(Vec::new())) {
            Allowed::Always => {}
            Allowed::If(rules) => {
                if !rules.contains(&rule) {
                    rules.push(rule);
                }
            }
        }
        self
    }

    /// Allows `ioctl` with each of the request numbers `requests`.
    pub(crate) fn ioctls(&mut self, requests: &[Ioctl]) -> &mut Self {
        self.name("ioctl");
        for req in requests {
            self.name(req.name);
            self.add_rule(libc::SYS_ioctl, vec![arg_eq(1, req.nr)]);
        }
        self
    }

    /// The names of the syscalls and ioctl requests allowed (syscalls without `SYS_`).
    pub(crate) fn names(&self) -> &[&'static str] {
        &self.names
    }

    /// Adds every rule of `other`.
    pub(crate) fn extend(&mut self, other: &Rules) -> &mut Self {
        for name in &other.names {
            self.name(name);
        }
        for (nr, allowed) in &other.map {
            match allowed {
                Allowed::Always => {
                    self.map.insert(*nr, Allowed::Always);
                }
                Allowed::If(rules) => {
                    for rule in rules {
                        match self.map.entry(*nr).or_insert(Allowed::If(Vec::new())) {
                            Allowed::Always => {}
                            Allowed::If(mine) => {
                                if !mine.contains(rule) {
                                    mine.push(rule.clone());
                                }
                            }
                        }
                    }
                }
            }
        }
        self
    }

    /// Whether `syscall` is allowed at all (with some arguments).
    pub(crate) fn mentions(&self, syscall: i64) -> bool {
        self.map.contains_key(&syscall)
    }

    /// The map seccompiler compiles.
    pub(crate) fn into_map(self) -> BTreeMap<i64, Vec<SeccompRule>> {
        self.map
            .into_iter()
            .map(|(nr, allowed)| match allowed {
                Allowed::Always => (nr, Vec::new()),
                Allowed::If(rules) => (nr, rules),
            })
            .collect()
    }
}

/// Argument `index` equals `value`, compared on its low 32 bits (ioctl requests, flags and
/// socket domains are C ints: the kernel ignores the upper half).
pub(crate) fn arg_eq(index: u8, value: u64) -> SeccompCondition {
    SeccompCondition::new(index, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
        .expect("argument indices used here are below 6")
}

/// Pointer argument `index` is NULL (all 64 bits zero).
pub(crate) fn arg_null(index: u8) -> SeccompCondition {
    SeccompCondition::new(index, SeccompCmpArgLen::Qword, SeccompCmpOp::Eq, 0)
        .expect("argument indices used here are below 6")
}

/// The bits `mask` of argument `index` equal `value`.
pub(crate) fn arg_masked(index: u8, mask: u64, value: u64) -> SeccompCondition {
    SeccompCondition::new(
        index,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(mask),
        value,
    )
    .expect("argument indices used here are below 6")
}

/// ioctl request numbers, computed from the kernel's encoding (`_IO`, `_IOR`, `_IOW`) and the
/// sizes of the kvm-bindings structs, so they match the running kernel's headers.
pub(crate) mod ioctl {
    use kvm_bindings::{
        KVMIO, kvm_ioeventfd, kvm_irq_routing, kvm_irqfd, kvm_msi, kvm_regs, kvm_sregs,
    };
    use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr, ioctl_iow_nr};

    use super::Ioctl;

    ioctl_io_nr!(kvm_run, KVMIO, 0x80);
    ioctl_ior_nr!(kvm_get_regs, KVMIO, 0x81, kvm_regs);
    ioctl_ior_nr!(kvm_get_sregs, KVMIO, 0x83, kvm_sregs);
    ioctl_iow_nr!(kvm_set_gsi_routing, KVMIO, 0x6a, kvm_irq_routing);
    ioctl_iow_nr!(kvm_irqfd, KVMIO, 0x76, kvm_irqfd);
    ioctl_iow_nr!(kvm_ioeventfd, KVMIO, 0x79, kvm_ioeventfd);
    ioctl_iow_nr!(kvm_signal_msi, KVMIO, 0xa5, kvm_msi);
    ioctl_iow_nr!(tun_set_offload, 0x54, 208, std::os::raw::c_uint);

    fn named(name: &'static str, nr: std::os::raw::c_ulong) -> Ioctl {
        Ioctl { nr, name }
    }

    /// `KVM_RUN`.
    pub(crate) fn run() -> Ioctl {
        named("KVM_RUN", kvm_run())
    }
    /// `KVM_GET_REGS` (crash reports).
    pub(crate) fn get_regs() -> Ioctl {
        named("KVM_GET_REGS", kvm_get_regs())
    }
    /// `KVM_GET_SREGS` (crash reports).
    pub(crate) fn get_sregs() -> Ioctl {
        named("KVM_GET_SREGS", kvm_get_sregs())
    }
    /// `KVM_SET_GSI_ROUTING` (IOAPIC redirection table changes).
    pub(crate) fn set_gsi_routing() -> Ioctl {
        named("KVM_SET_GSI_ROUTING", kvm_set_gsi_routing())
    }
    /// `KVM_IRQFD` (binding a device interrupt eventfd).
    pub(crate) fn irqfd() -> Ioctl {
        named("KVM_IRQFD", kvm_irqfd())
    }
    /// `KVM_IOEVENTFD` (binding a queue-notify eventfd).
    pub(crate) fn ioeventfd() -> Ioctl {
        named("KVM_IOEVENTFD", kvm_ioeventfd())
    }
    /// `KVM_SIGNAL_MSI` (interrupt delivery).
    pub(crate) fn signal_msi() -> Ioctl {
        named("KVM_SIGNAL_MSI", kvm_signal_msi())
    }
    /// `TUNSETOFFLOAD` (the tap's offloads from the features the guest accepted).
    pub(crate) fn tun_offload() -> Ioctl {
        named("TUNSETOFFLOAD", tun_set_offload())
    }
    /// `FIONBIO` (std's `set_nonblocking` on sockets).
    pub(crate) fn fionbio() -> Ioctl {
        named("FIONBIO", libc::FIONBIO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_abi() {
        // Values from <linux/kvm.h> and <linux/if_tun.h> on x86_64.
        assert_eq!(ioctl::run().nr, 0xae80);
        assert_eq!(ioctl::get_regs().nr, 0x8090_ae81);
        assert_eq!(ioctl::get_sregs().nr, 0x8138_ae83);
        assert_eq!(ioctl::set_gsi_routing().nr, 0x4008_ae6a);
        assert_eq!(ioctl::irqfd().nr, 0x4020_ae76);
        assert_eq!(ioctl::ioeventfd().nr, 0x4040_ae79);
        assert_eq!(ioctl::signal_msi().nr, 0x4020_aea5);
        assert_eq!(ioctl::tun_offload().nr, 0x4004_54d0);
        assert_eq!(ioctl::fionbio().nr, 0x5421);
    }

    #[test]
    fn unconditional_allow_wins_over_argument_rules() {
        let mut r = Rules::default();
        r.allow_if(sys!(SYS_ioctl), vec![arg_eq(1, 1)]);
        r.allow(&[sys!(SYS_ioctl)]);
        r.allow_if(sys!(SYS_ioctl), vec![arg_eq(1, 2)]);
        assert_eq!(r.names(), ["ioctl"]);
        assert_eq!(r.into_map()[&libc::SYS_ioctl], Vec::new());
    }

    #[test]
    fn extend_merges_argument_rules_once() {
        let io = |nr, name| Ioctl { nr, name };
        let mut a = Rules::default();
        a.ioctls(&[io(1, "A"), io(2, "B")]);
        let mut b = Rules::default();
        b.ioctls(&[io(2, "B"), io(3, "C")]);
        a.extend(&b);
        assert_eq!(a.names(), ["ioctl", "A", "B", "C"]);
        assert_eq!(a.into_map()[&libc::SYS_ioctl].len(), 3);
    }
}

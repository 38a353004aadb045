//! Seccomp filters, one per thread role: the VMM thread, vCPU threads, device worker threads
//! and the stdin reader.
//!
//! Each thread installs its role's filter itself, before it touches anything the guest controls
//! (vCPU threads before their first `KVM_RUN`, the VMM thread before the vCPUs are released,
//! device workers first thing in their thread). A syscall outside the role's allow-list kills
//! the whole process with `SIGSYS` ([`SeccompLevel::On`]), or is logged by the kernel and allowed
//! ([`SeccompLevel::Log`], to find what a new feature needs). The rules are Rust, one file per
//! role under `rules/`, compiled to BPF once per launch ([`Filters::new`], about 0.1 ms).
//! docs/security.md explains every allowed syscall.

mod rules;
mod start;
#[cfg(test)]
pub(crate) mod vcpu_tests;

pub(crate) use start::ThreadStart;

use std::fmt;
use std::str::FromStr;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// How strictly threads are filtered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeccompLevel {
    /// A syscall outside the role's allow-list kills the process (`SIGSYS`).
    #[default]
    On,
    /// Such a syscall is allowed and logged by the kernel (audit/kernel log, `type=1326`).
    Log,
    /// No filters.
    Off,
}

impl FromStr for SeccompLevel {
    type Err = SeccompError;
    fn from_str(s: &str) -> Result<Self, SeccompError> {
        match s {
            "on" => Ok(SeccompLevel::On),
            "log" => Ok(SeccompLevel::Log),
            "off" => Ok(SeccompLevel::Off),
            other => Err(SeccompError::BadLevel(other.to_string())),
        }
    }
}

impl fmt::Display for SeccompLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SeccompLevel::On => "on",
            SeccompLevel::Log => "log",
            SeccompLevel::Off => "off",
        })
    }
}

/// What the vCPU threads of one VM need beyond running plain guests. Plain VMs need nothing
/// more; VMs on guest_memfd slots (confidential, `--guest-memfd`) convert memory on their vCPU
/// threads, and TDX guests with a quote service forward quote requests from there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VcpuNeeds {
    /// Private/shared conversions on the guest's page-state exits: `KVM_SET_MEMORY_ATTRIBUTES`,
    /// hole punches in the guest_memfd, `MADV_REMOVE` on the shared view.
    pub memory_conversions: bool,
    /// TDX GetQuote forwarded to a quote generation service over a Unix socket.
    pub quote_socket: bool,
}

impl VcpuNeeds {
    /// Everything a vCPU thread may ever need (for documentation checks and tests).
    pub const ALL: VcpuNeeds = VcpuNeeds {
        memory_conversions: true,
        quote_socket: true,
    };
}

/// What a thread does, which decides the syscalls it may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The thread that launched the guest: waits for its end, stops the vCPUs, activates
    /// devices and starts their workers.
    Vmm,
    /// A vCPU thread: `KVM_RUN` and its exits.
    Vcpu,
    /// A virtio device's worker thread: its event loop and backend I/O.
    DeviceWorker,
    /// The `veil-stdin` thread: host input for COM1 or the virtio-console.
    Stdin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Vmm, Role::Vcpu, Role::DeviceWorker, Role::Stdin];

    /// The role's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Role::Vmm => "VMM thread",
            Role::Vcpu => "vCPU thread",
            Role::DeviceWorker => "device worker thread",
            Role::Stdin => "stdin reader thread",
        }
    }

    fn rules(self) -> rules::Rules {
        self.rules_with(VcpuNeeds::default())
    }

    fn rules_with(self, needs: VcpuNeeds) -> rules::Rules {
        match self {
            Role::Vmm => rules::stdin::with_terminal_restore(rules::vmm::rules()),
            Role::Vcpu => rules::vcpu::rules(needs),
            Role::DeviceWorker => rules::worker::rules(),
            Role::Stdin => rules::stdin::rules(),
        }
    }

    fn index(self) -> usize {
        match self {
            Role::Vmm => 0,
            Role::Vcpu => 1,
            Role::DeviceWorker => 2,
            Role::Stdin => 3,
        }
    }
}

/// Errors from building or installing a filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// Not one of `on`, `log`, `off`.
    #[error("--seccomp {0:?}: expected on, log or off")]
    BadLevel(String),
    /// The rules did not compile to BPF (a bug in the rules).
    #[error("seccomp filter of the {role}: {source}", role = .role.name())]
    Compile {
        /// Whose filter.
        role: Role,
        /// seccompiler's error.
        #[source]
        source: seccompiler::BackendError,
    },
    /// The kernel refused the filter (no seccomp support, or a syscall already filtered).
    #[error("installing the seccomp filter of the {role}: {source} (run with --seccomp off on a kernel without seccomp filters)", role = .role.name())]
    Install {
        /// Whose filter.
        role: Role,
        /// seccompiler's error.
        #[source]
        source: seccompiler::Error,
    },
}

/// The compiled filters of every role at one level, built once per launch and shared by the
/// threads that install them.
#[derive(Debug, Clone)]
pub struct Filters {
    level: SeccompLevel,
    programs: [BpfProgram; Role::ALL.len()],
}

impl Filters {
    /// Compiles every role's filter for `level` (nothing to compile for [`SeccompLevel::Off`]).
    pub fn new(level: SeccompLevel) -> Result<Self, SeccompError> {
        Self::with_vcpu_needs(level, VcpuNeeds::default())
    }

    /// As [`Filters::new`], with the vCPU filter allowing what `needs` lists.
    pub fn with_vcpu_needs(level: SeccompLevel, needs: VcpuNeeds) -> Result<Self, SeccompError> {
        let mut programs: [BpfProgram; Role::ALL.len()] = Default::default();
        if level != SeccompLevel::Off {
            for role in Role::ALL {
                programs[role.index()] = compile_with(role, level, needs)?;
            }
        }
        Ok(Filters { level, programs })
    }

    /// The level these filters enforce.
    pub fn level(&self) -> SeccompLevel {
        self.level
    }

    /// Installs `role`'s filter on the calling thread (nothing at [`SeccompLevel::Off`]). It
    /// stays for the thread's life and is inherited by threads it creates.
    pub fn install(&self, role: Role) -> Result<(), SeccompError> {
        if self.level == SeccompLevel::Off {
            return Ok(());
        }
        seccompiler::apply_filter(&self.programs[role.index()])
            .map_err(|source| SeccompError::Install { role, source })
    }

    /// The BPF program of `role` (empty at [`SeccompLevel::Off`]).
    pub fn program(&self, role: Role) -> &BpfProgram {
        &self.programs[role.index()]
    }
}

/// Compiles `role`'s filter at `level` and installs it on the calling thread (nothing at
/// [`SeccompLevel::Off`]): for threads started outside [`crate::launch`], such as device workers
/// (a shared [`Filters`] saves compiling it for each).
pub fn install(role: Role, level: SeccompLevel) -> Result<(), SeccompError> {
    if level == SeccompLevel::Off {
        return Ok(());
    }
    let program = compile(role, level)?;
    seccompiler::apply_filter(&program).map_err(|source| SeccompError::Install { role, source })
}

fn compile(role: Role, level: SeccompLevel) -> Result<BpfProgram, SeccompError> {
    compile_with(role, level, VcpuNeeds::default())
}

fn compile_with(
    role: Role,
    level: SeccompLevel,
    needs: VcpuNeeds,
) -> Result<BpfProgram, SeccompError> {
    let mismatch = match level {
        SeccompLevel::Log => SeccompAction::Log,
        _ => SeccompAction::KillProcess,
    };
    let filter = SeccompFilter::new(
        role.rules_with(needs).into_map(),
        mismatch,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .and_then(BpfProgram::try_from)
    .map_err(|source| SeccompError::Compile { role, source })?;
    Ok(filter)
}

/// Whether `role` may make `syscall` with some arguments (for tests and documentation checks).
pub fn allows_syscall(role: Role, syscall: i64) -> bool {
    role.rules().mentions(syscall)
}

/// Whether a vCPU thread of a VM with `needs` may make `syscall` with some arguments.
pub fn vcpu_allows_syscall(needs: VcpuNeeds, syscall: i64) -> bool {
    Role::Vcpu.rules_with(needs).mentions(syscall)
}

/// The names of the syscalls (without `SYS_`) and ioctl requests `role` may make, in the order
/// the rules list them.
pub fn allowed_names(role: Role) -> Vec<&'static str> {
    role.rules().names().to_vec()
}

/// [`allowed_names`] of the vCPU role for a VM with `needs`.
pub fn vcpu_allowed_names(needs: VcpuNeeds) -> Vec<&'static str> {
    Role::Vcpu.rules_with(needs).names().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_print() {
        for level in [SeccompLevel::On, SeccompLevel::Log, SeccompLevel::Off] {
            assert_eq!(level.to_string().parse::<SeccompLevel>().unwrap(), level);
        }
        let e = "strict".parse::<SeccompLevel>().unwrap_err().to_string();
        assert!(e.contains("--seccomp") && e.contains("strict"), "{e}");
    }

    #[test]
    fn every_role_compiles_at_every_level() {
        let on = Filters::new(SeccompLevel::On).unwrap();
        let log = Filters::new(SeccompLevel::Log).unwrap();
        for role in Role::ALL {
            assert!(!on.program(role).is_empty(), "{}", role.name());
            assert_eq!(on.program(role).len(), log.program(role).len());
            assert_ne!(on.program(role), log.program(role));
        }
        let off = Filters::new(SeccompLevel::Off).unwrap();
        assert!(Role::ALL.iter().all(|r| off.program(*r).is_empty()));
    }

    #[test]
    fn the_vmm_role_covers_the_device_workers_it_starts() {
        for nr in 0..512 {
            if allows_syscall(Role::DeviceWorker, nr) {
                assert!(allows_syscall(Role::Vmm, nr), "syscall {nr}");
            }
        }
    }

    #[test]
    fn docs_security_md_explains_every_allowed_syscall() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/security.md");
        let doc = std::fs::read_to_string(path).expect("docs/security.md exists");
        for role in Role::ALL {
            for name in allowed_names(role) {
                assert!(
                    doc.contains(&format!("`{name}`")),
                    "docs/security.md does not mention `{name}` ({})",
                    role.name()
                );
            }
        }
        for name in vcpu_allowed_names(VcpuNeeds::ALL) {
            assert!(
                doc.contains(&format!("`{name}`")),
                "docs/security.md does not mention `{name}` (confidential vCPU threads)"
            );
        }
    }

    #[test]
    fn plain_vcpus_get_none_of_the_confidential_rules() {
        let plain = VcpuNeeds::default();
        for nr in [
            libc::SYS_fallocate,
            libc::SYS_socket,
            libc::SYS_connect,
            libc::SYS_setsockopt,
            libc::SYS_recvfrom,
        ] {
            assert!(!vcpu_allows_syscall(plain, nr), "plain vCPUs allow {nr}");
            assert!(vcpu_allows_syscall(VcpuNeeds::ALL, nr), "{nr}");
        }
        let conversions = VcpuNeeds {
            memory_conversions: true,
            quote_socket: false,
        };
        assert!(vcpu_allows_syscall(conversions, libc::SYS_fallocate));
        assert!(!vcpu_allows_syscall(conversions, libc::SYS_socket));
        let plain_names = allowed_names(Role::Vcpu);
        assert!(!plain_names.contains(&"KVM_SET_MEMORY_ATTRIBUTES"));
        assert!(vcpu_allowed_names(conversions).contains(&"KVM_SET_MEMORY_ATTRIBUTES"));
        // Every confidential vCPU filter still compiles.
        for needs in [conversions, VcpuNeeds::ALL] {
            let f = Filters::with_vcpu_needs(SeccompLevel::On, needs).unwrap();
            assert!(
                f.program(Role::Vcpu).len()
                    > Filters::new(SeccompLevel::On)
                        .unwrap()
                        .program(Role::Vcpu)
                        .len()
            );
        }
    }

    #[test]
    fn no_role_may_start_programs_or_open_files() {
        for role in Role::ALL {
            for nr in [
                libc::SYS_execve,
                libc::SYS_execveat,
                libc::SYS_open,
                libc::SYS_openat,
                libc::SYS_fork,
                libc::SYS_vfork,
                libc::SYS_ptrace,
                libc::SYS_mount,
                libc::SYS_kill,
            ] {
                assert!(!allows_syscall(role, nr), "{} allows {nr}", role.name());
            }
        }
    }
}

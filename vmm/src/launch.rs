//! [`launch`]: from a validated config to running vCPU threads.

use std::sync::{Arc, Mutex, OnceLock};

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use vm_memory::GuestMemoryMmap;

use crate::config::{BootProtocol, Kernel, Payload, VmConfig};
use crate::device_manager::routing::GsiRoutes;
use crate::device_manager::{self, DeviceManagerError, Machine};
use crate::devices::{self, DeviceError};
use crate::exit::{CrashReport, ExitState, GuestExit};
use crate::handle::{VmHandle, kick_signal, on_kick, stop_threads};
use crate::memory::{MemoryError, MemoryLayout};
use crate::platform::{self, GuestMemfdVm, PlatformError};
use crate::seccomp::{Role, SeccompError, ThreadStart, VcpuNeeds};
use crate::vcpu::{self, RunContext, VcpuError, VcpuSetup};
use crate::vm::{self, KvmMsi, VmError};
use crate::x86::boot::{self, BootError, linux, pvh};
use crate::x86::regs::EntryMode;
use crate::x86::{paging, write_platform_tables};

/// Stack of each vCPU thread: the run loop is shallow and device handlers are small.
const VCPU_STACK: usize = 256 << 10;

/// Errors from launching a guest.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// `/dev/kvm` cannot be opened.
    #[error("/dev/kvm: {0}")]
    Kvm(String),
    /// More vCPUs than this host's KVM allows.
    #[error("--cpus {requested}: this host's KVM allows at most {max} vCPUs")]
    TooManyCpus {
        /// Asked for.
        requested: u32,
        /// KVM's limit (KVM_CAP_MAX_VCPUS).
        max: usize,
    },
    /// KVM_GET_SUPPORTED_CPUID failed.
    #[error("KVM_GET_SUPPORTED_CPUID: {0}")]
    Cpuid(#[source] kvm_ioctls::Error),
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The VM.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// A confidential or guest_memfd-backed VM.
    #[error(transparent)]
    Platform(#[from] PlatformError),
    /// The kernel, initramfs or boot structures.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// Devices.
    #[error(transparent)]
    Devices(#[from] DeviceError),
    /// Virtio devices.
    #[error(transparent)]
    Virtio(#[from] DeviceManagerError),
    /// A vCPU.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// The vCPU kick signal's handler could not be installed.
    #[error("installing the SIGRTMIN handler that stops vCPUs: {0}")]
    Signal(#[source] vmm_sys_util::errno::Error),
    /// A seccomp filter could not be built or installed.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// A vCPU thread could not be started.
    #[error("starting vCPU thread {id}: {source}")]
    Thread {
        /// The vCPU index.
        id: u32,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl LaunchError {
    /// Whether the error is the user's setting out of this host's range (exit status 2) rather
    /// than a run-time failure (exit status 1).
    pub fn is_usage_error(&self) -> bool {
        matches!(self, LaunchError::TooManyCpus { .. })
    }
}

fn open_kvm() -> Result<Kvm, LaunchError> {
    Kvm::new().map_err(|e| {
        LaunchError::Kvm(match e.errno() {
            libc::ENOENT => {
                "does not exist: KVM is not available on this host (is the kvm module loaded?)"
                    .into()
            }
            libc::EACCES | libc::EPERM => {
                "permission denied: this user may not use KVM (add it to the kvm group)".into()
            }
            _ => e.to_string(),
        })
    })
}

/// A VM with its memory and payload in place, before devices and vCPU threads.
struct Loaded {
    vm: Arc<VmFd>,
    memory: GuestMemoryMmap,
    high_ram: u64,
    vcpus: Vcpus,
    protocol: BootProtocol,
}

/// Where the vCPUs come from.
enum Vcpus {
    /// The VMM creates and sets them up; the BSP enters the kernel this way.
    Create(EntryMode),
    /// The confidential backend created and launched them (their state is measured).
    Launched(Vec<(u32, VcpuFd)>),
}

/// Boots the guest `config` describes and returns once its vCPUs run.
pub fn launch(config: &VmConfig) -> Result<VmHandle, LaunchError> {
    let kvm = open_kvm()?;
    let max = kvm.get_max_vcpus();
    if config.cpus() as usize > max {
        return Err(LaunchError::TooManyCpus {
            requested: config.cpus(),
            max,
        });
    }
    // Declared first, dropped last: the guest_memfd slots outlive the memory built on them.
    let mut platform = None;
    let loaded = match config.payload() {
        Payload::Kernel(kernel) => {
            let layout = MemoryLayout::new(config.memory());
            let (vm, memory) = if config.guest_memfd() {
                let p = platform::plain(&layout)?;
                platform = Some(p.platform);
                (p.vm, p.memory)
            } else {
                let memory = layout.create()?;
                (Arc::new(vm::create(&kvm, &memory)?), memory)
            };
            load_kernel(config, kernel, &layout, vm, memory)?
        }
        Payload::Confidential(c) => {
            let p = platform::confidential(c)?;
            platform = Some(p.platform);
            Loaded {
                vm: p.vm,
                memory: p.memory,
                high_ram: p.high_ram,
                vcpus: Vcpus::Launched(p.vcpus),
                // The plan's firmware or kernel entry, not one of Veil's boot protocols.
                protocol: BootProtocol::Auto,
            }
        }
    };
    start(config, &kvm, loaded, platform)
}

/// Loads `kernel` (and the initramfs, command line and boot structures) into `memory`.
fn load_kernel(
    config: &VmConfig,
    kernel: &Kernel,
    layout: &MemoryLayout,
    vm: Arc<VmFd>,
    memory: GuestMemoryMmap,
) -> Result<Loaded, LaunchError> {
    let loaded = boot::load_kernel(&memory, layout, kernel)?;
    let protocol = boot::choose(&loaded, config.boot(), &kernel.describe())?;
    let initramfs = match config.initramfs() {
        Some(path) => {
            let limit = match protocol {
                BootProtocol::Pvh => layout.low_ram_end(),
                _ => linux::initrd_limit(loaded.header.as_ref(), layout.low_ram_end()),
            };
            Some(boot::load_initramfs(&memory, path, loaded.end, limit)?)
        }
        None => None,
    };
    write_platform_tables(&memory, config.cpus() as u8).map_err(BootError::from)?;
    let cmdline_len = boot::write_cmdline(&memory, &device_manager::cmdline(config)?)?;
    let e820 = layout.e820();
    match protocol {
        BootProtocol::Pvh => pvh::write(&memory, &e820, initramfs).map_err(BootError::from)?,
        _ => {
            let params = linux::boot_params(loaded.header, &e820, cmdline_len, initramfs);
            linux::write(&memory, params).map_err(BootError::from)?;
            paging::write(&memory).map_err(BootError::from)?;
        }
    }
    log::debug!(
        "kernel {} loaded up to {:#x}, booting via {protocol:?}",
        kernel.describe(),
        loaded.end
    );
    Ok(Loaded {
        vm,
        memory,
        high_ram: layout.high_ram(),
        vcpus: Vcpus::Create(boot::entry_mode(&loaded, protocol)),
        protocol,
    })
}

/// Attaches the devices, starts the vCPU threads behind their seccomp filters and opens the
/// gate: the part every payload shares.
fn start(
    config: &VmConfig,
    kvm: &Kvm,
    loaded: Loaded,
    platform: Option<Arc<GuestMemfdVm>>,
) -> Result<VmHandle, LaunchError> {
    let Loaded {
        vm,
        memory,
        high_ram,
        vcpus,
        protocol,
    } = loaded;
    let cpus = config.cpus();
    let exit = Arc::new(ExitState::default());
    let routes = Arc::new(GsiRoutes::new(vm.clone()));
    let msi = KvmMsi {
        vm: vm.clone(),
        routes: routes.clone(),
    };
    let mut devs = devices::create(
        cpus as u8,
        Arc::new(msi),
        config.serial(),
        config.start(),
        exit.clone(),
    )?;
    let machine = Machine {
        vm: &vm,
        memory: &memory,
        high_ram,
        routes: &routes,
        access_platform: platform.is_some(),
    };
    let stdin = crate::stdin::Input::claim(config, &devs.serial, devs.serial_room.as_ref())
        .map_err(DeviceError::from)?;
    let virtio = device_manager::attach(config, &machine, &mut devs.pio, &mut devs.mmio)?;
    let fds = match vcpus {
        Vcpus::Create(entry) => {
            let setup = VcpuSetup {
                supported_cpuid: kvm
                    .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
                    .map_err(LaunchError::Cpuid)?,
                tsc_deadline: kvm.check_extension(Cap::TscDeadlineTimer),
                cpus,
                entry,
            };
            let mut fds = Vec::with_capacity(cpus as usize);
            for id in 0..cpus {
                fds.push((id, vcpu::create(&vm, id, &setup)?));
            }
            fds
        }
        Vcpus::Launched(fds) => fds,
    };

    install_kick_handler()?;
    let ctx = Arc::new(RunContext {
        pio: devs.pio,
        mmio: devs.mmio,
        ioapic: devs.ioapic,
        exit: exit.clone(),
        logged_mmio: Mutex::new(Vec::new()),
        platform: platform
            .clone()
            .map(|p| p as Arc<dyn platform::PlatformExits>),
    });
    // vCPU threads install their seccomp filter and wait until every thread is filtered.
    let needs = VcpuNeeds {
        memory_conversions: platform.is_some(),
        quote_socket: platform.as_ref().is_some_and(|p| p.has_quote_service()),
    };
    let mut start = ThreadStart::with_vcpu_needs(config.seccomp(), needs)?;
    let stdin = match stdin {
        Some(input) => {
            let ticket = start.ticket();
            Some(
                input
                    .spawn(move || ticket.enter(Role::Stdin))
                    .map_err(DeviceError::from)?,
            )
        }
        None => None,
    };
    let mut threads = Vec::with_capacity(fds.len());
    for (id, fd) in fds {
        let ctx = ctx.clone();
        let ticket = start.ticket();
        let spawned = std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .stack_size(VCPU_STACK)
            .spawn(move || {
                if !ticket.enter(Role::Vcpu) {
                    return;
                }
                let run = std::panic::AssertUnwindSafe(|| vcpu::run_loop(fd, id, &ctx));
                if std::panic::catch_unwind(run).is_err() {
                    // Never leave `wait` blocked on a vCPU that is gone.
                    ctx.exit.set(GuestExit::Crashed(CrashReport {
                        vcpu: id,
                        reason: "the vCPU thread panicked (a bug in Veil)".into(),
                        registers: String::new(),
                    }));
                }
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(source) => {
                exit.set(GuestExit::Stopped);
                start.abort();
                stop_threads(&mut threads);
                return Err(LaunchError::Thread { id, source });
            }
        }
    }
    if let Err(e) = start.open(config.seccomp_launching_thread()) {
        exit.set(GuestExit::Stopped);
        start.abort();
        stop_threads(&mut threads);
        return Err(e.into());
    }
    Ok(VmHandle {
        exit,
        threads: Mutex::new(threads),
        serial: devs.serial,
        boot_time: devs.boot_time,
        protocol,
        devices: virtio.threads,
        stdin,
        _vm: vm,
        _memory: memory,
        _platform: platform,
    })
}

/// Installs the no-op handler of the kick signal, once per process: without it the signal's
/// default action would end the process.
fn install_kick_handler() -> Result<(), LaunchError> {
    static INSTALLED: OnceLock<Result<(), vmm_sys_util::errno::Error>> = OnceLock::new();
    (*INSTALLED
        .get_or_init(|| vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick)))
    .map_err(LaunchError::Signal)
}

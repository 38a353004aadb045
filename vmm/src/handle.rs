//! [`launch`]: from a validated config to running vCPU threads; [`VmHandle`]: wait or stop.

use std::os::unix::thread::JoinHandleExt;
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Cap, Kvm, VmFd};
use veil_devices::legacy::Serial;
use vm_memory::GuestMemoryMmap;

use crate::config::{BootProtocol, VmConfig};
use crate::devices::{self, DeviceError};
use crate::exit::{CrashReport, ExitState, GuestExit};
use crate::memory::{MemoryError, MemoryLayout};
use crate::vcpu::{self, RunContext, VcpuError, VcpuSetup};
use crate::vm::{self, KvmMsi, VmError};
use crate::x86::boot::{self, BootError, linux, pvh};
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
    /// The kernel, initramfs or boot structures.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// Devices.
    #[error(transparent)]
    Devices(#[from] DeviceError),
    /// A vCPU.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
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

/// A running guest. Dropping it stops the guest.
#[derive(Debug)]
pub struct VmHandle {
    exit: Arc<ExitState>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    serial: Arc<Mutex<Serial>>,
    boot_time: Arc<OnceLock<Duration>>,
    protocol: BootProtocol,
    // Dropped after the vCPU threads are joined (fields drop in order; `wait`/`Drop` join first).
    _vm: Arc<VmFd>,
    _memory: GuestMemoryMmap,
}

/// The signal that kicks a vCPU thread out of KVM_RUN.
fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

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
    let layout = MemoryLayout::new(config.memory());
    let memory = layout.create()?;
    let vm = vm::create(&kvm, &memory)?;

    let kernel = boot::load_kernel(&memory, &layout, config.kernel())?;
    let protocol = boot::choose(&kernel, config.boot(), &config.kernel().describe())?;
    let initramfs = match config.initramfs() {
        Some(path) => {
            let limit = match protocol {
                BootProtocol::Pvh => layout.low_ram_end(),
                _ => linux::initrd_limit(kernel.header.as_ref(), layout.low_ram_end()),
            };
            Some(boot::load_initramfs(&memory, path, kernel.end, limit)?)
        }
        None => None,
    };
    let cpus = config.cpus();
    write_platform_tables(&memory, cpus as u8).map_err(BootError::from)?;
    let cmdline_len = boot::write_cmdline(&memory, config.cmdline())?;
    let e820 = layout.e820();
    match protocol {
        BootProtocol::Pvh => pvh::write(&memory, &e820, initramfs).map_err(BootError::from)?,
        _ => {
            let params = linux::boot_params(kernel.header, &e820, cmdline_len, initramfs);
            linux::write(&memory, params).map_err(BootError::from)?;
            paging::write(&memory).map_err(BootError::from)?;
        }
    }
    log::debug!(
        "kernel {} loaded up to {:#x}, booting via {protocol:?}",
        config.kernel().describe(),
        kernel.end
    );

    let vm = Arc::new(vm);
    let exit = Arc::new(ExitState::default());
    let devs = devices::create(
        cpus as u8,
        Arc::new(KvmMsi(vm.clone())),
        config.serial(),
        config.start(),
        exit.clone(),
    )?;
    let setup = VcpuSetup {
        supported_cpuid: kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(LaunchError::Cpuid)?,
        tsc_deadline: kvm.check_extension(Cap::TscDeadlineTimer),
        cpus,
        entry: boot::entry_mode(&kernel, protocol),
    };
    let mut fds = Vec::with_capacity(cpus as usize);
    for id in 0..cpus {
        fds.push(vcpu::create(&vm, id, &setup)?);
    }

    static SIGNAL: Once = Once::new();
    SIGNAL.call_once(|| {
        if let Err(e) = vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick) {
            log::warn!("cannot install the vCPU kick signal handler: {e}");
        }
    });
    let ctx = Arc::new(RunContext {
        pio: devs.pio,
        mmio: devs.mmio,
        ioapic: devs.ioapic,
        exit: exit.clone(),
        logged_mmio: Mutex::new(Vec::new()),
    });
    let mut threads = Vec::with_capacity(cpus as usize);
    for (id, fd) in (0..cpus).zip(fds) {
        let ctx = ctx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .stack_size(VCPU_STACK)
            .spawn(move || {
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
                stop_threads(&mut threads);
                return Err(LaunchError::Thread { id, source });
            }
        }
    }
    Ok(VmHandle {
        exit,
        threads: Mutex::new(threads),
        serial: devs.serial,
        boot_time: devs.boot_time,
        protocol,
        _vm: vm,
        _memory: memory,
    })
}

/// Kicks every thread out of KVM_RUN until it has seen the end, then joins it.
fn stop_threads(threads: &mut Vec<JoinHandle<()>>) {
    // A kick can land just before a thread re-enters KVM_RUN, so kick again every millisecond
    // until each thread is out; most are out within microseconds of the first kick.
    let mut polls = 0u32;
    while threads.iter().any(|t| !t.is_finished()) {
        if polls % 50 == 0 {
            for t in threads.iter().filter(|t| !t.is_finished()) {
                // SAFETY: the thread has not been joined, so its pthread_t is valid; the signal
                // has a no-op handler installed by `launch`.
                unsafe { libc::pthread_kill(t.as_pthread_t(), kick_signal()) };
            }
        }
        polls += 1;
        std::thread::sleep(Duration::from_micros(20));
    }
    for t in threads.drain(..) {
        // Threads catch their own panics (see `launch`); join cannot fail in practice.
        let _ = t.join();
    }
}

impl VmHandle {
    /// Blocks until the guest ends, stops every vCPU and flushes the serial output.
    pub fn wait(&self) -> GuestExit {
        let exit = self.exit.wait();
        self.finish();
        exit
    }

    /// Ends the guest now (its exit becomes [`GuestExit::Stopped`] unless it already ended).
    pub fn stop(&self) {
        self.exit.set(GuestExit::Stopped);
        self.finish();
    }

    /// Time from the configured start to the guest's first write to port `0x80`.
    pub fn boot_time(&self) -> Option<Duration> {
        self.boot_time.get().copied()
    }

    /// The boot protocol the guest was entered through.
    pub fn protocol(&self) -> BootProtocol {
        self.protocol
    }

    fn finish(&self) {
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        stop_threads(&mut threads);
        let mut serial = self.serial.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = serial.flush() {
            log::warn!("flushing serial output: {e}");
        }
    }
}

impl Drop for VmHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

//! `VmConfig`: what to launch, validated once. Every later stage trusts it.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use veil_firmware::LaunchPlan;
use veil_launch::backend::LaunchOptions;

use crate::seccomp::SeccompLevel;
use crate::virtio_config::{self, Transport, VirtioConfigError, VirtioDeviceConfig};

/// Most vCPUs Veil gives a guest: xAPIC ids are 8 bits and `0xff` is the broadcast id, so the MP
/// table and the MADT's local APIC entries name CPUs `0..=253` and the IOAPIC takes id 254.
pub const MAX_CPUS: u32 = 254;
/// Least guest RAM Veil accepts: kernels load at 1 MiB and need room above it.
pub const MIN_MEMORY: u64 = 4 << 20;
/// Longest kernel command line, NUL included (the command-line area is 64 KiB).
pub const MAX_CMDLINE: usize = 64 << 10;
const PAGE_SIZE: u64 = 4096;

/// Invalid configuration: each variant names the setting and what was wrong with it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// `--cpus 0`.
    #[error("--cpus: a guest needs at least one vCPU (got 0)")]
    ZeroCpus,
    /// More vCPUs than Veil's APIC-id range allows.
    #[error("--cpus {0}: at most {MAX_CPUS} vCPUs are supported (8-bit APIC ids)")]
    TooManyCpus(u32),
    /// A memory size string that does not parse.
    #[error(
        "--memory {0:?}: not a size; use a number with an optional K, M, G or T suffix (plain numbers are MiB), e.g. 512M or 2G"
    )]
    BadMemorySize(String),
    /// `--memory 0`.
    #[error("--memory: the guest needs some memory (got 0)")]
    ZeroMemory,
    /// Less memory than a kernel needs.
    #[error("--memory {0} bytes: at least {MIN_MEMORY} bytes (4 MiB) are needed")]
    MemoryTooSmall(u64),
    /// Not a whole number of 4 KiB pages.
    #[error("--memory {0} bytes: must be a multiple of 4 KiB")]
    MemoryNotPageAligned(u64),
    /// More memory than the host has.
    #[error("--memory {} ({requested} bytes): more than the host's {} of RAM", mib(*.requested), mib(*.host))]
    MemoryBeyondHost {
        /// What was asked for.
        requested: u64,
        /// The host's total RAM.
        host: u64,
    },
    /// A confidential launch plan without vCPUs.
    #[error("the confidential launch plan has no vCPU")]
    PlanWithoutVcpus,
    /// A confidential launch plan for the plain platform.
    #[error("the launch plan is for platform {0}; a confidential launch needs sev-snp or tdx")]
    PlanNotConfidential(veil_firmware::Platform),
    /// A quote service for a platform that has no use for it.
    #[error("a quote generation service is for TDX guests, not {0}")]
    QuoteServiceNotTdx(veil_firmware::Platform),
    /// A command line the guest could not receive.
    #[error("--cmdline: {0}")]
    BadCmdline(&'static str),
    /// A virtio device setting.
    #[error(transparent)]
    Virtio(#[from] VirtioConfigError),
}

/// The kernel to boot.
#[derive(Debug, Clone)]
pub enum Kernel {
    /// An ELF (with or without a PVH note) or bzImage file.
    File(PathBuf),
    /// An ELF or bzImage held in memory (built in, or produced by the embedding program).
    Image {
        /// What to call the image in messages.
        name: String,
        /// The ELF or bzImage bytes.
        bytes: Cow<'static, [u8]>,
    },
}

impl Kernel {
    /// The probe guest built into Veil (ELF with a PVH note and a 64-bit Linux entry).
    pub fn probe() -> Self {
        Kernel::Image {
            name: "the embedded probe guest".into(),
            bytes: Cow::Borrowed(crate::probe_image::PROBE_ELF),
        }
    }

    /// How messages name this kernel.
    pub fn describe(&self) -> String {
        match self {
            Kernel::File(path) => path.display().to_string(),
            Kernel::Image { name, .. } => name.clone(),
        }
    }
}

/// A confidential launch (SEV-SNP or TDX): the launch plan the platform replays and measures,
/// and the choices the plan leaves to the launcher. Build the plan with
/// `veil_firmware::build_plan` (its `platform` picks the backend).
#[derive(Debug, Clone)]
pub struct ConfidentialLaunch {
    /// The plan: page imports, vCPU states, policy, memory layout.
    pub plan: Arc<LaunchPlan>,
    /// SEV-SNP and TDX launch options (policy, TD attributes, ...).
    pub options: LaunchOptions,
    /// Unix socket of a TDX quote generation service for the guest's GetQuote (TDX only).
    pub quote_service: Option<PathBuf>,
}

/// What the guest starts from.
#[derive(Debug, Clone)]
pub enum Payload {
    /// A plain guest: Veil loads this kernel and writes the boot structures itself.
    Kernel(Kernel),
    /// A confidential guest: the platform backend launches the plan (memory, measurement,
    /// vCPU state); Veil then adds the devices and runs the vCPUs.
    Confidential(ConfidentialLaunch),
}

/// The boot protocol used to enter the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BootProtocol {
    /// PVH when the kernel has a PVH note, else the 64-bit Linux boot protocol.
    #[default]
    Auto,
    /// PVH: 32-bit entry from the ELF note, `hvm_start_info` in `EBX`.
    Pvh,
    /// The 64-bit Linux boot protocol: long mode, `boot_params` in `RSI`.
    Linux,
}

/// Where the guest's serial console (COM1) goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SerialOutput {
    /// This process's standard output.
    #[default]
    Stdout,
    /// A file, created or truncated at launch.
    File(PathBuf),
    /// Discarded.
    Off,
}

/// A memory size parsed from text such as `512M`, `2G`, `1024K`, `4096` (MiB when no suffix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemorySize(pub u64);

impl FromStr for MemorySize {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::BadMemorySize(s.to_string());
        let t = s.trim();
        let lower = t.to_ascii_lowercase();
        let stripped = lower
            .strip_suffix("ib")
            .or_else(|| lower.strip_suffix('b'))
            .unwrap_or(&lower);
        let (digits, shift) = match stripped.chars().last() {
            Some('k') => (&stripped[..stripped.len() - 1], 10),
            Some('m') => (&stripped[..stripped.len() - 1], 20),
            Some('g') => (&stripped[..stripped.len() - 1], 30),
            Some('t') => (&stripped[..stripped.len() - 1], 40),
            Some(c) if c.is_ascii_digit() && stripped.len() == lower.len() => (stripped, 20),
            _ => return Err(bad()),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        n.checked_mul(1 << shift).map(MemorySize).ok_or_else(bad)
    }
}

/// A validated description of a guest to launch. Build it with [`VmConfig::builder`].
#[derive(Debug, Clone)]
pub struct VmConfig {
    payload: Payload,
    guest_memfd: bool,
    initramfs: Option<PathBuf>,
    cmdline: String,
    boot: BootProtocol,
    cpus: u32,
    memory: u64,
    serial: SerialOutput,
    start: Instant,
    devices: Vec<VirtioDeviceConfig>,
    transport: Transport,
    seccomp: SeccompLevel,
    seccomp_launching_thread: bool,
}

impl VmConfig {
    /// A builder with defaults: 1 vCPU, 256 MiB, automatic boot protocol, serial to stdout.
    pub fn builder(kernel: Kernel) -> VmConfigBuilder {
        Self::builder_for(Payload::Kernel(kernel))
    }

    /// A builder for `payload` with the same defaults as [`VmConfig::builder`]; a confidential
    /// payload takes its vCPU count and memory from the plan.
    pub fn builder_for(payload: Payload) -> VmConfigBuilder {
        VmConfigBuilder {
            cfg: VmConfig {
                payload,
                guest_memfd: false,
                initramfs: None,
                cmdline: String::new(),
                boot: BootProtocol::Auto,
                cpus: 1,
                memory: 256 << 20,
                serial: SerialOutput::Stdout,
                start: Instant::now(),
                devices: Vec::new(),
                transport: Transport::Pci,
                seccomp: SeccompLevel::On,
                seccomp_launching_thread: false,
            },
            host_memory: None,
        }
    }

    /// What the guest starts from.
    pub fn payload(&self) -> &Payload {
        &self.payload
    }
    /// The kernel to boot (None for a confidential launch, whose plan holds the payload).
    pub fn kernel(&self) -> Option<&Kernel> {
        match &self.payload {
            Payload::Kernel(k) => Some(k),
            Payload::Confidential(_) => None,
        }
    }
    /// Whether guest RAM sits in guest_memfd slots with a shared view (always for confidential
    /// launches; asked for with [`VmConfigBuilder::guest_memfd`] for plain ones).
    pub fn guest_memfd(&self) -> bool {
        self.guest_memfd || matches!(self.payload, Payload::Confidential(_))
    }
    /// The initramfs file, if any.
    pub fn initramfs(&self) -> Option<&Path> {
        self.initramfs.as_deref()
    }
    /// The kernel command line.
    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }
    /// The boot protocol asked for.
    pub fn boot(&self) -> BootProtocol {
        self.boot
    }
    /// Number of vCPUs.
    pub fn cpus(&self) -> u32 {
        self.cpus
    }
    /// Guest RAM in bytes.
    pub fn memory(&self) -> u64 {
        self.memory
    }
    /// Where the serial console goes.
    pub fn serial(&self) -> &SerialOutput {
        &self.serial
    }
    /// The instant the boot timer measures from.
    pub fn start(&self) -> Instant {
        self.start
    }
    /// The virtio devices, in the order the guest finds them.
    pub fn devices(&self) -> &[VirtioDeviceConfig] {
        &self.devices
    }
    /// The transport of devices that do not pick their own.
    pub fn transport(&self) -> Transport {
        self.transport
    }
    /// How Veil's threads are filtered.
    pub fn seccomp(&self) -> SeccompLevel {
        self.seccomp
    }
    /// Whether the thread calling [`crate::launch`] gets the VMM thread's filter too.
    pub fn seccomp_launching_thread(&self) -> bool {
        self.seccomp_launching_thread
    }
}

/// Collects settings for a [`VmConfig`] and checks them in [`VmConfigBuilder::build`].
#[derive(Debug, Clone)]
pub struct VmConfigBuilder {
    cfg: VmConfig,
    host_memory: Option<u64>,
}

impl VmConfigBuilder {
    /// An initramfs to load (Linux protocol: `boot_params`; PVH: the first module).
    pub fn initramfs(mut self, path: impl Into<PathBuf>) -> Self {
        self.cfg.initramfs = Some(path.into());
        self
    }
    /// The kernel command line.
    pub fn cmdline(mut self, cmdline: impl Into<String>) -> Self {
        self.cfg.cmdline = cmdline.into();
        self
    }
    /// The boot protocol.
    pub fn boot(mut self, boot: BootProtocol) -> Self {
        self.cfg.boot = boot;
        self
    }
    /// Number of vCPUs.
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cfg.cpus = cpus;
        self
    }
    /// Guest RAM in bytes.
    pub fn memory(mut self, bytes: u64) -> Self {
        self.cfg.memory = bytes;
        self
    }
    /// Where the serial console goes.
    pub fn serial(mut self, serial: SerialOutput) -> Self {
        self.cfg.serial = serial;
        self
    }
    /// The instant the boot timer measures from (the CLI passes its process start).
    pub fn start(mut self, start: Instant) -> Self {
        self.cfg.start = start;
        self
    }
    /// Adds a virtio device after those already added.
    pub fn device(mut self, device: VirtioDeviceConfig) -> Self {
        self.cfg.devices.push(device);
        self
    }
    /// The transport of devices that do not pick their own (default: PCI).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.cfg.transport = transport;
        self
    }
    /// Seccomp filtering of the threads Veil starts (vCPUs, device workers); default
    /// [`SeccompLevel::On`].
    pub fn seccomp(mut self, level: SeccompLevel) -> Self {
        self.cfg.seccomp = level;
        self
    }
    /// Also filter the thread that calls [`crate::launch`] with the VMM thread's rules, before
    /// any vCPU runs; default false. Afterwards that thread may only wait for or stop the guest
    /// and exit (the `veil` binary's main thread does just that); it cannot open files.
    pub fn seccomp_launching_thread(mut self, on: bool) -> Self {
        self.cfg.seccomp_launching_thread = on;
        self
    }
    /// Puts a plain guest's RAM on the memory layout of confidential guests: guest_memfd slots
    /// whose shared view holds the guest's memory (on a plain VM nothing is private, so the
    /// guest runs from the shared view), page-state hypercall exits handled by Veil, devices
    /// offering `VIRTIO_F_ACCESS_PLATFORM` over the shared view, and the confidential vCPU
    /// seccomp rules. It exercises the confidential run-time path on any KVM host with
    /// guest_memfd slots for plain VMs; it encrypts nothing. Default false.
    pub fn guest_memfd(mut self, on: bool) -> Self {
        self.cfg.guest_memfd = on;
        self
    }
    /// Checks memory against this amount instead of the host's RAM (for tests).
    pub fn host_memory(mut self, bytes: u64) -> Self {
        self.host_memory = Some(bytes);
        self
    }

    /// Validates the settings.
    pub fn build(self) -> Result<VmConfig, ConfigError> {
        let mut cfg = self.cfg;
        if let Payload::Confidential(c) = &cfg.payload {
            let platform = c.plan.platform;
            if platform == veil_firmware::Platform::None {
                return Err(ConfigError::PlanNotConfidential(platform));
            }
            if c.quote_service.is_some() && platform != veil_firmware::Platform::Tdx {
                return Err(ConfigError::QuoteServiceNotTdx(platform));
            }
            // The plan fixes the vCPUs and RAM; the launch creates what it lists.
            cfg.cpus = u32::try_from(c.plan.vcpus.len()).unwrap_or(u32::MAX);
            if cfg.cpus == 0 {
                return Err(ConfigError::PlanWithoutVcpus);
            }
            cfg.memory = c
                .plan
                .memory
                .iter()
                .map(|m| m.size)
                .sum::<u64>()
                .max(MIN_MEMORY);
        }
        match cfg.cpus {
            0 => return Err(ConfigError::ZeroCpus),
            n if n > MAX_CPUS => return Err(ConfigError::TooManyCpus(n)),
            _ => {}
        }
        match cfg.memory {
            0 => return Err(ConfigError::ZeroMemory),
            m if m < MIN_MEMORY => return Err(ConfigError::MemoryTooSmall(m)),
            m if m % PAGE_SIZE != 0 => return Err(ConfigError::MemoryNotPageAligned(m)),
            _ => {}
        }
        if let Some(host) = self.host_memory.or_else(host_ram) {
            if cfg.memory > host {
                return Err(ConfigError::MemoryBeyondHost {
                    requested: cfg.memory,
                    host,
                });
            }
        }
        if cfg.cmdline.len() + 1 > MAX_CMDLINE {
            return Err(ConfigError::BadCmdline("longer than 64 KiB"));
        }
        if cfg.cmdline.contains('\0') {
            return Err(ConfigError::BadCmdline("contains a NUL byte"));
        }
        virtio_config::validate(&cfg.devices, cfg.transport)?;
        Ok(cfg)
    }
}

/// `bytes` in MiB, for messages.
fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes >> 20)
}

/// The host's total RAM in bytes, if the kernel tells.
fn host_ram() -> Option<u64> {
    // SAFETY: sysinfo only writes into the zeroed struct we pass it.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable sysinfo struct.
    if unsafe { libc::sysinfo(&mut info) } != 0 {
        return None;
    }
    (info.totalram as u64).checked_mul(u64::from(info.mem_unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> VmConfigBuilder {
        VmConfig::builder(Kernel::File("k".into())).host_memory(8 << 30)
    }

    #[test]
    fn memory_sizes_parse() {
        let p = |s: &str| s.parse::<MemorySize>().map(|m| m.0);
        assert_eq!(p("512M"), Ok(512 << 20));
        assert_eq!(p("2G"), Ok(2 << 30));
        assert_eq!(p("2g"), Ok(2 << 30));
        assert_eq!(p("2GiB"), Ok(2 << 30));
        assert_eq!(p("1024k"), Ok(1 << 20));
        assert_eq!(p("64"), Ok(64 << 20));
        assert_eq!(p("1T"), Ok(1 << 40));
        for bad in [
            "",
            "M",
            "12Q",
            "-1G",
            "1.5G",
            "0x10M",
            "99999999999999999T",
            "1 G",
        ] {
            assert!(
                matches!(p(bad), Err(ConfigError::BadMemorySize(_))),
                "{bad:?} parsed"
            );
        }
    }

    #[test]
    fn validation_names_the_bad_setting() {
        assert_eq!(
            builder().cpus(0).build().unwrap_err(),
            ConfigError::ZeroCpus
        );
        assert_eq!(
            builder().cpus(255).build().unwrap_err(),
            ConfigError::TooManyCpus(255)
        );
        assert_eq!(
            builder().memory(0).build().unwrap_err(),
            ConfigError::ZeroMemory
        );
        assert_eq!(
            builder().memory(1 << 20).build().unwrap_err(),
            ConfigError::MemoryTooSmall(1 << 20)
        );
        assert_eq!(
            builder().memory((64 << 20) + 1).build().unwrap_err(),
            ConfigError::MemoryNotPageAligned((64 << 20) + 1)
        );
        assert_eq!(
            builder().memory(16 << 30).build().unwrap_err(),
            ConfigError::MemoryBeyondHost {
                requested: 16 << 30,
                host: 8 << 30
            }
        );
        assert!(builder().cmdline("a\0b").build().is_err());
        assert!(builder().cmdline("x".repeat(MAX_CMDLINE)).build().is_err());
        let ok = builder().cpus(4).memory(512 << 20).build().unwrap();
        assert_eq!((ok.cpus(), ok.memory()), (4, 512 << 20));
    }

    #[test]
    fn a_confidential_payload_takes_cpus_and_memory_from_its_plan() {
        use veil_firmware::Platform;
        use veil_firmware::plan::{MemoryRange, VcpuState};
        let launch = |plan: LaunchPlan, quote: Option<PathBuf>| {
            VmConfig::builder_for(Payload::Confidential(ConfidentialLaunch {
                plan: Arc::new(plan),
                options: LaunchOptions::default(),
                quote_service: quote,
            }))
            .host_memory(8 << 30)
            .cpus(7)
        };
        let mut plan = LaunchPlan::new(Platform::SevSnp);
        assert_eq!(
            launch(plan.clone(), None).build().unwrap_err(),
            ConfigError::PlanWithoutVcpus
        );
        plan.vcpus = vec![VcpuState::reset(0xfff0, 0); 2];
        plan.memory = vec![
            MemoryRange {
                gpa: 0,
                size: 0x8000_0000,
            },
            MemoryRange {
                gpa: 1 << 32,
                size: 0x4000_0000,
            },
        ];
        let cfg = launch(plan.clone(), None).build().unwrap();
        assert_eq!((cfg.cpus(), cfg.memory()), (2, 0xc000_0000));
        assert!(cfg.guest_memfd() && cfg.kernel().is_none());
        assert_eq!(
            launch(plan.clone(), Some("q".into())).build().unwrap_err(),
            ConfigError::QuoteServiceNotTdx(Platform::SevSnp)
        );
        plan.platform = Platform::None;
        assert_eq!(
            launch(plan, None).build().unwrap_err(),
            ConfigError::PlanNotConfidential(Platform::None)
        );
        // Plain guests keep their kernel and opt in to guest_memfd.
        let plain = builder().guest_memfd(true).build().unwrap();
        assert!(plain.guest_memfd() && plain.kernel().is_some());
        assert!(!builder().build().unwrap().guest_memfd());
    }

    #[test]
    fn memory_error_message_names_the_flag() {
        let e = "lots".parse::<MemorySize>().unwrap_err().to_string();
        assert!(e.contains("--memory") && e.contains("lots"), "{e}");
    }
}

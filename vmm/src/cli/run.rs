//! `veil run`: boot a kernel (or, with no payload, the embedded probe guest) and wait for it.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use clap::ValueEnum;
use veil_vmm::virtio_config::VirtioConfigError;
use veil_vmm::{
    BootProtocol, ConsoleOutput, DiskConfig, GuestExit, Kernel, MemorySize, NetConfig, Payload,
    SeccompLevel, SerialOutput, Transport, VirtioDeviceConfig, VmConfig, VsockConfig, launch,
};

use super::confidential::Outcome;

/// Arguments of `veil run`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: the guest's (0 after a shutdown or reset, the value it wrote to port 0xf4); 1 if the guest crashed (registers are printed) or Veil failed; 2 for usage errors."
)]
pub struct RunArgs {
    /// Kernel to boot: an ELF (with or without a PVH note) or a bzImage. Default: the embedded
    /// probe guest.
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,
    /// Initramfs to load (needs --kernel).
    #[arg(long, value_name = "FILE", requires = "kernel")]
    pub initramfs: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, value_name = "STRING", default_value = "")]
    pub cmdline: String,
    /// Boot protocol: pvh, linux (64-bit Linux boot protocol), or auto (PVH when the kernel has
    /// the note).
    #[arg(long, value_enum, default_value_t = Boot::Auto)]
    pub boot: Boot,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub cpus: u32,
    /// Guest RAM: a number with K, M, G or T suffix (plain numbers are MiB), e.g. 512M, 2G.
    #[arg(long, default_value = "256M", value_name = "SIZE")]
    pub memory: MemorySize,
    /// Serial console (COM1): stdio, file=PATH or off. With stdio it also reads stdin (unless
    /// --console stdio takes it); a terminal is put in raw mode for the run (^C goes to the guest).
    #[arg(long, default_value = "stdio", value_name = "stdio|file=PATH|off", value_parser = parse_serial)]
    pub serial: SerialOutput,
    /// A virtio-blk disk (repeatable): path=FILE, then comma-separated any of readonly=on,
    /// direct=on (O_DIRECT), num_queues=N (1-16), engine=auto|sync|io_uring, id=STRING (GET_ID,
    /// up to 20 bytes), poll_us=N (longest adaptive polling window of the queue workers, 0-1000
    /// microseconds, 0 = no polling; default 32), transport=pci|mmio.
    #[arg(long, value_name = "path=FILE,...", value_parser = ordered::<DiskConfig>)]
    pub disk: Vec<Ordered<DiskConfig>>,
    /// A virtio-net card on a tap (repeatable): tap=NAME[,mac=MAC][,transport=pci|mmio].
    #[arg(long, value_name = "tap=NAME,...", value_parser = ordered::<NetConfig>)]
    pub net: Vec<Ordered<NetConfig>>,
    /// A virtio-vsock device bridged to a host Unix socket (Firecracker's protocol):
    /// cid=N,socket=PATH[,transport=pci|mmio].
    #[arg(long, value_name = "cid=N,socket=PATH", value_parser = ordered::<VsockConfig>)]
    pub vsock: Option<Ordered<VsockConfig>>,
    /// A virtio-rng device (entropy from the host's getrandom).
    #[arg(long, num_args = 0, default_missing_value = "on", value_parser = ordered_rng)]
    pub rng: Option<Ordered<()>>,
    /// A virtio console: stdio, file=PATH or off (output discarded). `--serial` stays the UART.
    /// With stdio the console, not COM1, reads stdin (only one device takes it).
    #[arg(long, value_name = "stdio|file=PATH|off", value_parser = ordered::<ConsoleOutput>)]
    pub console: Option<Ordered<ConsoleOutput>>,
    /// Transport of virtio devices that do not set transport= themselves: pci (virtio-pci with
    /// MSI-X) or mmio (virtio-mmio, announced on the kernel command line). Virtio-pci functions
    /// take slots from 00:01.0 and virtio-mmio windows from 0xd0000000 in command-line order.
    #[arg(long, default_value = "pci", value_name = "pci|mmio", value_parser = parse_transport)]
    pub transport: Transport,
    /// Print the time from veil's start to the guest's first write to port 0x80.
    #[arg(long)]
    pub boot_timer: bool,
    /// Seccomp filters on every thread (docs/security.md): on (a forbidden syscall kills veil
    /// with SIGSYS), log (the kernel logs it and veil goes on) or off.
    #[arg(long, default_value = "on", value_name = "on|log|off")]
    pub seccomp: SeccompLevel,
    /// Put the guest's RAM on the confidential memory layout (guest_memfd slots with a shared
    /// view, page-state exits handled by Veil, devices offering ACCESS_PLATFORM): exercises the
    /// confidential run-time path on a plain KVM host; encrypts nothing (docs/launch.md).
    #[arg(long)]
    pub guest_memfd: bool,
    /// Log level on stderr.
    #[arg(long, value_enum, default_value_t = LogLevel::Warn)]
    pub log_level: LogLevel,
    /// Confidential launch: --platform, --dry-run, --firmware, --igvm, --policy, --host-data...
    #[command(flatten)]
    pub confidential: super::confidential::ConfidentialArgs,
}

/// `--boot` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Boot {
    /// PVH when the kernel has a PVH note, else the Linux protocol.
    Auto,
    /// PVH (ELF kernels with a PVH note).
    Pvh,
    /// The 64-bit Linux boot protocol (bzImage or ELF).
    Linux,
}

/// `--log-level` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogLevel {
    /// Nothing.
    Off,
    /// Errors.
    Error,
    /// Warnings and errors.
    Warn,
    /// Progress.
    Info,
    /// Details, including the boot timer and unknown ports.
    Debug,
    /// Everything.
    Trace,
}

/// A flag value with its position among the virtio flags: clap parses values in command-line
/// order, so the sequence number gives the order the guest sees the devices in.
#[derive(Debug, Clone)]
pub struct Ordered<T>(usize, T);

static NEXT_DEVICE: AtomicUsize = AtomicUsize::new(0);

fn ordered<T: FromStr<Err = VirtioConfigError>>(s: &str) -> Result<Ordered<T>, String> {
    let v = s.parse::<T>().map_err(|e| e.to_string())?;
    Ok(Ordered(NEXT_DEVICE.fetch_add(1, Ordering::Relaxed), v))
}

fn ordered_rng(s: &str) -> Result<Ordered<()>, String> {
    match s {
        "on" => Ok(Ordered(NEXT_DEVICE.fetch_add(1, Ordering::Relaxed), ())),
        _ => Err(format!("--rng takes no value (got {s:?})")),
    }
}

fn parse_transport(s: &str) -> Result<Transport, String> {
    s.parse().map_err(|e: VirtioConfigError| e.to_string())
}

/// The virtio devices of `args` in command-line order.
fn devices(args: &mut RunArgs) -> Vec<VirtioDeviceConfig> {
    let mut all: Vec<(usize, VirtioDeviceConfig)> = Vec::new();
    all.extend(
        args.disk
            .drain(..)
            .map(|Ordered(i, d)| (i, VirtioDeviceConfig::Disk(d))),
    );
    all.extend(
        args.net
            .drain(..)
            .map(|Ordered(i, n)| (i, VirtioDeviceConfig::Net(n))),
    );
    all.extend(
        args.vsock
            .take()
            .map(|Ordered(i, v)| (i, VirtioDeviceConfig::Vsock(v))),
    );
    all.extend(
        args.rng
            .take()
            .map(|Ordered(i, ())| (i, VirtioDeviceConfig::Rng)),
    );
    all.extend(
        args.console
            .take()
            .map(|Ordered(i, c)| (i, VirtioDeviceConfig::Console(c))),
    );
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, d)| d).collect()
}

fn parse_serial(s: &str) -> Result<SerialOutput, String> {
    match s {
        "stdio" => Ok(SerialOutput::Stdout),
        "off" => Ok(SerialOutput::Off),
        _ => match s.strip_prefix("file=") {
            Some("") => Err("file= needs a path".into()),
            Some(path) => Ok(SerialOutput::File(path.into())),
            None => Err(format!("{s:?} is not stdio, file=PATH or off")),
        },
    }
}

/// Runs the subcommand; `start` is the process start the boot timer measures from.
pub fn execute(mut args: RunArgs, start: Instant) -> anyhow::Result<i32> {
    super::logger::init(match args.log_level {
        LogLevel::Off => log::LevelFilter::Off,
        LogLevel::Error => log::LevelFilter::Error,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Trace => log::LevelFilter::Trace,
    });
    let virtio = devices(&mut args);
    let mut announce = None;
    let payload = if args.confidential.wanted() {
        if args.guest_memfd {
            return Ok(super::usage_error(
                &"--guest-memfd is for plain guests; confidential guests always run on guest_memfd",
            ));
        }
        // virtio-mmio windows are announced on the kernel command line, which a confidential
        // direct boot measures: the tokens go into the plan. Firmware and IGVM guests find
        // virtio-pci functions only.
        let mut cmdline = args.cmdline.clone();
        let tokens = veil_vmm::virtio_config::mmio_tokens(&virtio, args.transport);
        if !tokens.is_empty() {
            if args.kernel.is_none() {
                return Ok(super::usage_error(
                    &"virtio-mmio devices are announced on the kernel command line; a confidential \
                      guest without --kernel finds virtio-pci devices only (use --transport pci)",
                ));
            }
            for t in tokens {
                if !cmdline.is_empty() {
                    cmdline.push(' ');
                }
                cmdline.push_str(&t);
            }
        }
        let common = super::confidential::Common {
            kernel: args.kernel,
            initramfs: args.initramfs.clone(),
            cmdline: Some(cmdline),
            cpus: args.cpus,
            memory: args.memory.0,
        };
        match super::confidential::prepare(common, &args.confidential)? {
            Outcome::Done(status) => return Ok(status),
            Outcome::Launch {
                payload,
                announce: a,
            } => {
                announce = Some(a);
                *payload
            }
        }
    } else {
        Payload::Kernel(match args.kernel {
            Some(path) => Kernel::File(path),
            None => Kernel::probe(),
        })
    };
    let confidential = matches!(payload, Payload::Confidential(_));
    let mut builder = VmConfig::builder_for(payload)
        .cmdline(args.cmdline)
        .boot(match args.boot {
            Boot::Auto => BootProtocol::Auto,
            Boot::Pvh => BootProtocol::Pvh,
            Boot::Linux => BootProtocol::Linux,
        })
        .cpus(args.cpus)
        .memory(args.memory.0)
        .serial(args.serial)
        .transport(args.transport)
        .guest_memfd(args.guest_memfd)
        .seccomp(args.seccomp)
        .seccomp_launching_thread(true)
        .start(start);
    for d in virtio {
        builder = builder.device(d);
    }
    if let (Some(initramfs), false) = (args.initramfs, confidential) {
        builder = builder.initramfs(initramfs);
    }
    let config = match builder.build() {
        Ok(c) => c,
        Err(e) => return Ok(super::usage_error(&e)),
    };
    let vm = match launch(&config) {
        Ok(vm) => vm,
        Err(e) if e.is_usage_error() => return Ok(super::usage_error(&e)),
        Err(e) => {
            // Veil's messages already carry their causes; anyhow's chain would repeat them.
            eprintln!("veil: error: {e}");
            return Ok(1);
        }
    };
    if let Some(a) = announce {
        eprintln!("{a}");
    }
    let exit = vm.wait();
    if args.boot_timer {
        match vm.boot_time() {
            Some(t) => eprintln!(
                "veil: boot timer: {:.3} ms from veil's start to the guest's first write to port 0x80",
                t.as_secs_f64() * 1e3
            ),
            None => eprintln!("veil: boot timer: the guest never wrote to port 0x80"),
        }
    }
    if let GuestExit::Crashed(report) = &exit {
        eprintln!(
            "veil: error: guest failed on vCPU {}: {}\n{}",
            report.vcpu, report.reason, report.registers
        );
    }
    Ok(exit.status())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_values() {
        assert_eq!(parse_serial("stdio"), Ok(SerialOutput::Stdout));
        assert_eq!(parse_serial("off"), Ok(SerialOutput::Off));
        assert_eq!(
            parse_serial("file=/tmp/x"),
            Ok(SerialOutput::File("/tmp/x".into()))
        );
        assert!(parse_serial("file=").is_err());
        assert!(parse_serial("tcp:1").is_err());
    }

    #[test]
    fn virtio_devices_keep_command_line_order() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct T {
            #[command(flatten)]
            run: RunArgs,
        }
        let mut t = T::try_parse_from([
            "veil",
            "--rng",
            "--disk",
            "path=a",
            "--console",
            "off",
            "--net",
            "tap=t0",
            "--disk",
            "path=b,transport=mmio",
            "--transport",
            "mmio",
        ])
        .unwrap();
        assert_eq!(t.run.transport, Transport::Mmio);
        let kinds: Vec<String> = devices(&mut t.run)
            .iter()
            .map(|d| match d {
                VirtioDeviceConfig::Disk(d) => d.path.display().to_string(),
                VirtioDeviceConfig::Net(n) => n.tap.clone(),
                VirtioDeviceConfig::Rng => "rng".into(),
                VirtioDeviceConfig::Console(_) => "console".into(),
                VirtioDeviceConfig::Vsock(_) => "vsock".into(),
            })
            .collect();
        assert_eq!(kinds, ["rng", "a", "console", "t0", "b"]);
        let e = T::try_parse_from(["veil", "--disk", "path=a,num_queues=99"]).unwrap_err();
        assert!(e.to_string().contains("num_queues"), "{e}");
        assert!(T::try_parse_from(["veil", "--rng", "--rng"]).is_err());
    }
}

//! `veil run`: boot a kernel (or, with no payload, the embedded probe guest) and wait for it.

use std::path::PathBuf;
use std::time::Instant;

use clap::ValueEnum;
use veil_vmm::{
    BootProtocol, GuestExit, Kernel, MemorySize, SeccompLevel, SerialOutput, VmConfig, launch,
};

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
    /// Serial console (COM1): stdio, file=PATH or off.
    #[arg(long, default_value = "stdio", value_name = "stdio|file=PATH|off", value_parser = parse_serial)]
    pub serial: SerialOutput,
    /// Print the time from veil's start to the guest's first write to port 0x80.
    #[arg(long)]
    pub boot_timer: bool,
    /// Seccomp filters on every thread (docs/security.md): on (a forbidden syscall kills veil
    /// with SIGSYS), log (the kernel logs it and veil goes on) or off.
    #[arg(long, default_value = "on", value_name = "on|log|off")]
    pub seccomp: SeccompLevel,
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
pub fn execute(args: RunArgs, start: Instant) -> anyhow::Result<i32> {
    super::logger::init(match args.log_level {
        LogLevel::Off => log::LevelFilter::Off,
        LogLevel::Error => log::LevelFilter::Error,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Trace => log::LevelFilter::Trace,
    });
    if args.confidential.wanted() {
        let common = super::confidential::Common {
            kernel: args.kernel,
            initramfs: args.initramfs,
            cmdline: Some(args.cmdline),
            cpus: args.cpus,
            memory: args.memory.0,
        };
        return super::confidential::execute(common, &args.confidential);
    }
    let kernel = match args.kernel {
        Some(path) => Kernel::File(path),
        None => Kernel::probe(),
    };
    let mut builder = VmConfig::builder(kernel)
        .cmdline(args.cmdline)
        .boot(match args.boot {
            Boot::Auto => BootProtocol::Auto,
            Boot::Pvh => BootProtocol::Pvh,
            Boot::Linux => BootProtocol::Linux,
        })
        .cpus(args.cpus)
        .memory(args.memory.0)
        .serial(args.serial)
        .seccomp(args.seccomp)
        .seccomp_launching_thread(true)
        .start(start);
    if let Some(initramfs) = args.initramfs {
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
}

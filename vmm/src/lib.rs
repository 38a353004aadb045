//! Veil's VMM as a library: a validated [`VmConfig`], a [`launch`] call and a [`VmHandle`] to wait
//! for or stop the running guest.
//!
//! The `veil` binary is a thin command line over this crate, so that cloud builders can embed Veil.
//!
//! ```no_run
//! use veil_vmm::{Kernel, VmConfig, launch};
//! let config = VmConfig::builder(Kernel::File("vmlinux".into()))
//!     .cpus(2)
//!     .memory(512 << 20)
//!     .cmdline("console=ttyS0")
//!     .build()?;
//! let vm = launch(&config)?;
//! let exit = vm.wait();
//! std::process::exit(exit.status());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod config;
mod device_manager;
mod devices;
pub mod exit;
mod handle;
mod launch;
pub mod memory;
mod platform;
pub mod probe_image;
pub mod seccomp;
mod stdin;
mod vcpu;
pub mod virtio_config;
mod vm;
pub mod x86;

pub use config::{
    BootProtocol, ConfidentialLaunch, ConfigError, Kernel, MemorySize, Payload, SerialOutput,
    VmConfig,
};
pub use exit::{CrashReport, GuestExit};
pub use handle::VmHandle;
pub use launch::{LaunchError, launch};
pub use platform::PlatformError;
pub use seccomp::SeccompLevel;
pub use virtio_config::{
    ConsoleOutput, DiskConfig, DiskEngine, NetConfig, Transport, VirtioDeviceConfig, VsockConfig,
};

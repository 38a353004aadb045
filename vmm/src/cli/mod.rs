//! Subcommands of `veil`. Each lives in its own module with its own clap `Args`.
//!
//! Exit statuses: 0 success, 1 run-time failure, 2 usage error. Usage errors are bad flags or
//! flag values (clap's own errors, and settings out of range: `--cpus 0` or above what Veil or
//! this host's KVM allows, `--memory` that does not parse, is 0, or exceeds the host's RAM).
//! Run-time failures are everything found while running: `/dev/kvm` missing or not permitted, a
//! kernel or initramfs that is missing, unreadable, malformed or does not fit, a crashed guest.
//! `veil run` otherwise ends with the guest's status: 0 for shutdown or reset, the value written
//! to the debug-exit port.

pub mod attest;
pub mod confidential;
pub mod host_check;
pub mod id_block;
pub mod igvm;
pub mod logger;
pub mod measure;
pub mod run;

use std::time::Instant;

/// Parses a number flag: decimal, or hexadecimal with a `0x` prefix.
pub(crate) fn parse_number(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s:?} is not a number: {e}"))
}

use clap::{Parser, Subcommand};

/// Veil: a confidential virtual machine monitor for Linux KVM.
#[derive(Debug, Parser)]
#[command(name = "veil", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// Launch a guest (with no payload: the embedded probe guest).
    Run(run::RunArgs),
    /// Compute the launch digest of a payload offline, without KVM.
    Measure(measure::MeasureArgs),
    /// Report what this host supports: KVM, VM types, SEV-SNP, TDX, guest_memfd, io_uring, tap.
    HostCheck(host_check::HostCheckArgs),
    /// Attestation evidence: verify SNP reports and TDX quotes.
    #[command(subcommand)]
    Attest(attest::AttestCommand),
    /// Build an SNP ID block and ID auth block for a measurement and policy.
    IdBlock(id_block::IdBlockArgs),
    /// IGVM tools.
    #[command(subcommand)]
    Igvm(igvm::IgvmCommand),
}

impl Command {
    /// Runs the subcommand and returns the process exit status; `start` is when the process
    /// started (the boot timer's origin).
    pub fn execute(self, start: Instant) -> anyhow::Result<i32> {
        match self {
            Command::Run(a) => run::execute(a, start),
            Command::Measure(a) => measure::execute(a),
            Command::HostCheck(a) => host_check::execute(a),
            Command::Attest(a) => attest::execute(a),
            Command::IdBlock(a) => id_block::execute(a),
            Command::Igvm(a) => igvm::execute(a),
        }
    }
}

/// Prints a usage error the way clap does (to stderr) and returns its exit status, 2.
pub fn usage_error(err: &dyn std::fmt::Display) -> i32 {
    eprintln!("veil: error: {err}");
    2
}

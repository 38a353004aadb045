//! Subcommands of `veil`. Each lives in its own module with its own clap `Args`.
//!
//! Exit statuses: 0 success, 1 run-time failure, 2 usage error (clap's default for bad flags).

pub mod attest;
pub mod host_check;
pub mod id_block;
pub mod igvm;
pub mod measure;
pub mod run;

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
    /// Runs the subcommand and returns the process exit status.
    pub fn execute(self) -> anyhow::Result<i32> {
        match self {
            Command::Run(a) => run::execute(a),
            Command::Measure(a) => measure::execute(a),
            Command::HostCheck(a) => host_check::execute(a),
            Command::Attest(a) => attest::execute(a),
            Command::IdBlock(a) => id_block::execute(a),
            Command::Igvm(a) => igvm::execute(a),
        }
    }
}

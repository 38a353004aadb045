//! `veil attest` (placeholder until the attestation issue lands).

/// Subcommands of `veil attest`.
#[derive(Debug, clap::Subcommand)]
pub enum AttestCommand {
    /// Verify an attestation report.
    Verify,
}

/// Runs the subcommand.
pub fn execute(_cmd: AttestCommand) -> anyhow::Result<i32> {
    anyhow::bail!("veil attest is not available in this build yet")
}

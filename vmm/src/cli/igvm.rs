//! `veil igvm` (placeholder until the measurement issue lands).

/// Subcommands of `veil igvm`.
#[derive(Debug, clap::Subcommand)]
pub enum IgvmCommand {
    /// Wrap an OVMF image (and optionally a kernel) into an IGVM file.
    Build,
}

/// Runs the subcommand.
pub fn execute(_cmd: IgvmCommand) -> anyhow::Result<i32> {
    anyhow::bail!("veil igvm is not available in this build yet")
}

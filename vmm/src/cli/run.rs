//! `veil run` (placeholder until its issue lands; replaced by the owning change).

/// Arguments of `veil run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {}

/// Runs the subcommand.
pub fn execute(_args: RunArgs) -> anyhow::Result<i32> {
    anyhow::bail!("veil run is not available in this build yet")
}

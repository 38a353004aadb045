//! `veil measure` (placeholder until its issue lands; replaced by the owning change).

/// Arguments of `veil measure`.
#[derive(Debug, clap::Args)]
pub struct MeasureArgs {}

/// Runs the subcommand.
pub fn execute(_args: MeasureArgs) -> anyhow::Result<i32> {
    anyhow::bail!("veil measure is not available in this build yet")
}

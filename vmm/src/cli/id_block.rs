//! `veil id-block` (placeholder until its issue lands; replaced by the owning change).

/// Arguments of `veil id-block`.
#[derive(Debug, clap::Args)]
pub struct IdBlockArgs {}

/// Runs the subcommand.
pub fn execute(_args: IdBlockArgs) -> anyhow::Result<i32> {
    anyhow::bail!("veil id-block is not available in this build yet")
}

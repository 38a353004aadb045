//! `veil host-check` (placeholder until its issue lands; replaced by the owning change).

/// Arguments of `veil host-check`.
#[derive(Debug, clap::Args)]
pub struct HostCheckArgs {}

/// Runs the subcommand.
pub fn execute(_args: HostCheckArgs) -> anyhow::Result<i32> {
    anyhow::bail!("veil host-check is not available in this build yet")
}

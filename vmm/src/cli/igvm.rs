//! `veil igvm`: IGVM tools.

use std::path::PathBuf;

use anyhow::{Context, bail};
use veil_firmware::id_block::{self, IdBlockInput};
use veil_firmware::measure;
use veil_firmware::plan::IdBlockPair;
use veil_firmware::{Payload, Platform, build_plan};

use super::measure::{CpuArgs, MeasureArgs, PayloadArgs, vm_config};

/// Subcommands of `veil igvm`.
#[derive(Debug, clap::Subcommand)]
pub enum IgvmCommand {
    /// Wrap an OVMF image (and optionally a kernel, initrd and command line for SNP measured
    /// direct boot) into an IGVM file for SEV-SNP and/or TDX (and/or native).
    Build(BuildArgs),
}

/// Arguments of `veil igvm build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The OVMF image to wrap.
    #[arg(long)]
    pub firmware: PathBuf,
    /// Kernel for SNP measured direct boot (its hashes go into the KERNEL_HASHES page).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Initramfs for measured direct boot.
    #[arg(long, alias = "initrd")]
    pub initramfs: Option<PathBuf>,
    /// Command line for measured direct boot.
    #[arg(long, alias = "append")]
    pub cmdline: Option<String>,
    /// Platforms to include (repeat or comma-separate): sev-snp, tdx, none.
    #[arg(long, value_delimiter = ',', required = true)]
    pub platform: Vec<Platform>,
    /// QEMU CPU model for the SNP VMSA's CPU signature.
    #[arg(long, conflicts_with = "cpu_sig")]
    pub cpu_type: Option<String>,
    /// CPU signature for the SNP VMSA.
    #[arg(long)]
    pub cpu_sig: Option<String>,
    /// SEV features written into the SNP VMSA.
    #[arg(long, default_value = "0x1")]
    pub guest_features: String,
    /// SNP guest policy.
    #[arg(long, default_value = "0x30000")]
    pub policy: String,
    /// Number of vCPUs the SNP ID block's launch digest is computed for.
    #[arg(long, default_value_t = 1)]
    pub cpus: u32,
    /// Sign an SNP ID block for the SEV-SNP launch digest with this ID key (P-384 PEM).
    #[arg(long)]
    pub id_key: Option<PathBuf>,
    /// Author key (P-384 PEM) that signs the ID key.
    #[arg(long, requires = "id_key")]
    pub author_key: Option<PathBuf>,
    /// Output file.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Also print the digest of each platform (as `veil measure` prints it for --cpus).
    #[arg(long)]
    pub print_digests: bool,
}

fn number(s: &str, what: &str) -> anyhow::Result<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .with_context(|| format!("{what} {s:?} is not a number"))
}

/// Runs the subcommand.
pub fn execute(cmd: IgvmCommand) -> anyhow::Result<i32> {
    let IgvmCommand::Build(args) = cmd;
    if args.kernel.is_none() && (args.initramfs.is_some() || args.cmdline.is_some()) {
        bail!("--initramfs and --cmdline need --kernel");
    }
    let mut plans = Vec::new();
    for &platform in &args.platform {
        let margs = MeasureArgs {
            payload: PayloadArgs {
                kernel: args.kernel.clone(),
                initramfs: args.initramfs.clone(),
                cmdline: args.cmdline.clone(),
                firmware: Some(args.firmware.clone()),
                igvm: None,
            },
            platform,
            cpus: args.cpus,
            memory: 512 << 20,
            cpu: CpuArgs {
                cpu_type: args.cpu_type.clone(),
                cpu_sig: args
                    .cpu_sig
                    .as_deref()
                    .map(|s| number(s, "--cpu-sig"))
                    .transpose()?,
                guest_features: number(&args.guest_features, "--guest-features")?,
            },
            policy: Some(number(&args.policy, "--policy")?),
            host_data: None,
            trace: false,
            json: false,
        };
        let config = vm_config(&margs)?;
        let payload: Payload = margs.payload.payload()?;
        let mut plan = build_plan(&payload, &config)
            .with_context(|| format!("building the {platform} plan"))?;
        if let (Platform::SevSnp, Some(id_key)) = (platform, &args.id_key) {
            plan.id_block = Some(sign_id_block(&plan, id_key, args.author_key.as_ref())?);
        }
        if args.print_digests {
            let d = measure::digest(&plan, None)?;
            let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
            println!("{platform}: {hex}");
        }
        plans.push(plan);
    }
    let bytes = veil_firmware::igvm::build(&plans)?;
    std::fs::write(&args.output, bytes)
        .with_context(|| format!("writing {}", args.output.display()))?;
    Ok(0)
}

fn load_key(path: &PathBuf, what: &'static str) -> anyhow::Result<p384::ecdsa::SigningKey> {
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("{what} key {}", path.display()))?;
    id_block::signing_key_from_pem(&pem, what)
        .with_context(|| format!("{what} key {}", path.display()))
}

/// An ID block for the plan's own launch digest and policy.
fn sign_id_block(
    plan: &veil_firmware::LaunchPlan,
    id_key: &PathBuf,
    author_key: Option<&PathBuf>,
) -> anyhow::Result<IdBlockPair> {
    let input = IdBlockInput {
        measurement: measure::digest(plan, None)?,
        family_id: [0; 16],
        image_id: [0; 16],
        version: 1,
        guest_svn: 0,
        policy: plan.policy.unwrap_or(0x30000),
    };
    let id = load_key(id_key, "ID")?;
    let author = author_key.map(|p| load_key(p, "author")).transpose()?;
    let (block, auth) = id_block::build(&input, &id, author.as_ref());
    Ok(IdBlockPair {
        id_block: block.to_vec(),
        id_auth: auth.to_vec(),
        author_key_enabled: author.is_some(),
    })
}

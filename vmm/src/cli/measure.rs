//! `veil measure`: the launch digest of a payload, computed offline without KVM.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sha2::{Digest, Sha384};
use veil_firmware::cpu_types;

use super::parse_number;
use veil_firmware::measure::{self, Step};
use veil_firmware::{KernelFiles, Payload, Platform, VmConfig, build_plan};

/// Payload flags shared with `veil run`.
#[derive(Debug, Clone, clap::Args)]
pub struct PayloadArgs {
    /// Linux kernel (bzImage or ELF) for direct boot; with --firmware, SNP measured direct boot.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Initramfs for direct boot.
    #[arg(long, alias = "initrd")]
    pub initramfs: Option<PathBuf>,
    /// Kernel command line for direct boot (with --igvm: the file's COMMAND_LINE parameter).
    #[arg(long, alias = "append")]
    pub cmdline: Option<String>,
    /// Firmware image (OVMF), loaded to end at 4 GiB.
    #[arg(long, conflicts_with = "igvm")]
    pub firmware: Option<PathBuf>,
    /// IGVM file.
    #[arg(long, conflicts_with_all = ["kernel", "initramfs"])]
    pub igvm: Option<PathBuf>,
}

impl PayloadArgs {
    /// The payload these flags describe.
    pub fn payload(&self) -> anyhow::Result<Payload> {
        if let Some(igvm) = &self.igvm {
            return match (&self.firmware, &self.kernel) {
                (None, None) => Ok(Payload::Igvm(igvm.clone())),
                _ => bail!("--igvm cannot be combined with --firmware or --kernel"),
            };
        }
        let kernel = match &self.kernel {
            Some(k) => Some(KernelFiles {
                kernel: k.clone(),
                initrd: self.initramfs.clone(),
                cmdline: self.cmdline.clone(),
            }),
            None if self.initramfs.is_some() || self.cmdline.is_some() => {
                bail!("--initramfs and --cmdline need --kernel")
            }
            None => None,
        };
        Ok(match (&self.firmware, kernel) {
            (Some(f), kernel) => Payload::Firmware {
                path: f.clone(),
                kernel,
            },
            (None, Some(k)) => Payload::Kernel(k),
            (None, None) => bail!("no payload: give --firmware, --igvm or --kernel"),
        })
    }
}

/// Arguments of `veil measure`.
#[derive(Debug, clap::Args)]
pub struct MeasureArgs {
    #[command(flatten)]
    pub payload: PayloadArgs,
    /// Platform whose digest to compute: none, sev-snp or tdx.
    #[arg(long, default_value = "sev-snp")]
    pub platform: Platform,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    pub cpus: u32,
    /// Guest memory (e.g. 512M, 2G).
    #[arg(long, default_value = "512M", value_parser = parse_size)]
    pub memory: u64,
    /// The SNP VMSAs' CPU signature and SEV features.
    #[command(flatten)]
    pub cpu: CpuArgs,
    /// Guest policy recorded in the plan (SNP LAUNCH_START policy).
    #[arg(long, value_parser = parse_number)]
    pub policy: Option<u64>,
    /// Host data (32 bytes as 64 hex digits) for SNP_LAUNCH_FINISH.
    #[arg(long)]
    pub host_data: Option<String>,
    /// List every measured step (GPA, page type, running digest) on stderr.
    #[arg(long)]
    pub trace: bool,
    /// Print a JSON object with the digest, the inputs and their hashes.
    #[arg(long)]
    pub json: bool,
}

/// The CPU the SNP VMSAs describe: flags shared by `veil measure`, `veil run --platform` and
/// `veil attest verify` (with payload flags).
#[derive(Debug, Clone, clap::Args)]
pub struct CpuArgs {
    /// QEMU CPU model whose signature goes into the VMSAs (EPYC, EPYC-Milan, EPYC-Genoa, ...).
    #[arg(long, conflicts_with = "cpu_sig")]
    pub cpu_type: Option<String>,
    /// CPU signature (CPUID 1 EAX) as a number, e.g. 0xa00f11.
    #[arg(long, value_parser = parse_number)]
    pub cpu_sig: Option<u64>,
    /// SEV features of the VMSAs (KVM_SEV_INIT2 vmsa_features; bit 0 SNP_ACTIVE; KVM offers
    /// DebugSwap, bit 5).
    #[arg(long, default_value = "0x1", value_parser = parse_number)]
    pub guest_features: u64,
}

/// Parses a size such as `512M`, `2G`, `65536` or `4K`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (num, shift) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n: u64 = num
        .parse()
        .map_err(|e| format!("{s:?} is not a size: {e}"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn parse_host_data(s: &str) -> anyhow::Result<[u8; 32]> {
    if s.len() != 64 {
        bail!(
            "--host-data must be 64 hex digits (32 bytes), got {} characters",
            s.len()
        );
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
            .with_context(|| format!("--host-data {s:?} is not hex"))?;
    }
    Ok(out)
}

/// The VM configuration these flags describe.
pub fn vm_config(args: &MeasureArgs) -> anyhow::Result<VmConfig> {
    let cpu_signature = match (&args.cpu.cpu_type, args.cpu.cpu_sig) {
        (Some(t), _) => cpu_types::signature_of(t).with_context(|| {
            format!(
                "unknown --cpu-type {t:?}; known: {}",
                cpu_types::known_names().join(", ")
            )
        })?,
        (None, Some(sig)) => u32::try_from(sig).context("--cpu-sig must fit in 32 bits")?,
        (None, None) if args.platform == Platform::SevSnp => {
            bail!("SEV-SNP VMSAs carry the CPU signature: give --cpu-type or --cpu-sig")
        }
        (None, None) => 0,
    };
    Ok(VmConfig {
        platform: args.platform,
        cpus: args.cpus,
        memory: args.memory,
        cpu_signature,
        sev_features: args.cpu.guest_features,
        policy: args.policy,
        host_data: match &args.host_data {
            Some(h) => parse_host_data(h)?,
            None => [0; 32],
        },
        cmdline: args.payload.cmdline.clone(),
    })
}

fn file_input(role: &str, path: &Path) -> anyhow::Result<serde_json::Value> {
    let bytes = std::fs::read(path).with_context(|| format!("{role} {}", path.display()))?;
    Ok(serde_json::json!({
        "role": role,
        "path": path.display().to_string(),
        "size": bytes.len(),
        "sha384": hex(&Sha384::digest(&bytes)),
    }))
}

/// Runs the subcommand.
pub fn execute(args: MeasureArgs) -> anyhow::Result<i32> {
    let payload = args.payload.payload()?;
    let config = vm_config(&args)?;
    let plan = build_plan(&payload, &config)?;
    let mut stderr = std::io::stderr().lock();
    let mut count = 0u64;
    let mut tracer = |s: Step<'_>| {
        use std::io::Write;
        count += 1;
        // A closed stderr must not abort the measurement.
        let _ = writeln!(
            stderr,
            "{count:>8} gpa={:#014x} {:<10} {:<28} {}",
            s.gpa,
            s.what,
            s.label,
            hex(s.digest)
        );
    };
    let digest = if args.trace {
        measure::digest(&plan, Some(&mut tracer))?
    } else {
        measure::digest(&plan, None)?
    };
    if args.json {
        let mut inputs = Vec::new();
        let p = &args.payload;
        for (role, path) in [
            ("firmware", &p.firmware),
            ("igvm", &p.igvm),
            ("kernel", &p.kernel),
            ("initramfs", &p.initramfs),
        ] {
            if let Some(path) = path {
                inputs.push(file_input(role, path)?);
            }
        }
        if let Some(c) = &p.cmdline {
            inputs.push(serde_json::json!({
                "role": "cmdline", "value": c, "sha384": hex(&Sha384::digest(c.as_bytes())),
            }));
        }
        let out = serde_json::json!({
            "platform": plan.platform.name(),
            "digest": hex(&digest),
            "cpus": config.cpus,
            "cpu_signature": format!("{:#x}", config.cpu_signature),
            "guest_features": format!("{:#x}", plan.sev_features),
            "memory": config.memory,
            "policy": plan.policy.map(|p| format!("{p:#x}")),
            "host_data": hex(&plan.host_data),
            "imports": plan.imports.len(),
            "imported_bytes": plan.imported_bytes(),
            "inputs": inputs,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{}", hex(&digest));
    }
    Ok(0)
}

//! `veil run --platform sev-snp|tdx`: a confidential launch on this host, or with `--dry-run`
//! the same launch sequence replayed through the platform model (any host, nothing created).
//!
//! Without `--dry-run`, a host that lacks the platform is refused before anything is created,
//! with the list of what is missing (the facts `veil host-check` reports). Otherwise the plan
//! becomes a [`Payload::Confidential`] that `veil run` launches through `veil_vmm::launch`, with
//! the same devices, serial port and seccomp filters as a plain guest.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use veil_firmware::measure;
use veil_firmware::plan::IdBlockPair;
use veil_firmware::{LaunchPlan, Platform, build_plan};
use veil_launch::backend::{self, LaunchOptions};
use veil_launch::dry_run;
use veil_launch::snp::launch::SnpOptions;
use veil_launch::tdx::launch::TdxOptions;
use veil_vmm::{ConfidentialLaunch, Payload};

use super::measure::{CpuArgs, MeasureArgs, PayloadArgs, vm_config};
use super::parse_number;

/// The confidential-launch flags of `veil run`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfidentialArgs {
    /// Platform: none (plain KVM), sev-snp or tdx.
    #[arg(long, default_value = "none")]
    pub platform: Platform,
    /// Replay the launch through the platform model and print the command log and digest;
    /// creates nothing and runs no guest (works on any host).
    #[arg(long)]
    pub dry_run: bool,
    /// Firmware image (OVMF) for a confidential launch.
    #[arg(long, conflicts_with = "igvm")]
    pub firmware: Option<PathBuf>,
    /// IGVM file for a confidential launch.
    #[arg(long)]
    pub igvm: Option<PathBuf>,
    /// SEV-SNP guest policy (default: the IGVM file's, else 0x30000).
    #[arg(long, value_parser = parse_number)]
    pub policy: Option<u64>,
    /// Host data bound to the SNP launch (64 hex digits), reported as HOST_DATA.
    #[arg(long)]
    pub host_data: Option<String>,
    /// SNP ID block (96 bytes, e.g. from `veil id-block --out-dir`), checked by the firmware
    /// at SNP_LAUNCH_FINISH against the launch digest and policy.
    #[arg(long, requires = "id_auth")]
    pub id_block: Option<PathBuf>,
    /// SNP ID auth block (4096 bytes) for --id-block.
    #[arg(long, requires = "id_block")]
    pub id_auth: Option<PathBuf>,
    /// The SNP VMSAs' CPU signature (default on a real launch: this host's) and SEV features.
    #[command(flatten)]
    pub cpu: CpuArgs,
    /// TDX TD attributes (default: SEPT_VE_DISABLE).
    #[arg(long, value_parser = parse_number)]
    pub tdx_attributes: Option<u64>,
    /// TDX XFAM (default: x87, SSE and AVX as far as supported).
    #[arg(long, value_parser = parse_number)]
    pub tdx_xfam: Option<u64>,
    /// TDX MRCONFIGID (96 hex digits).
    #[arg(long)]
    pub mrconfigid: Option<String>,
    /// TDX MROWNER (96 hex digits).
    #[arg(long)]
    pub mrowner: Option<String>,
    /// TDX MROWNERCONFIG (96 hex digits).
    #[arg(long)]
    pub mrownerconfig: Option<String>,
    /// Unix socket of a TDX quote generation service (QGS) for the guest's GetQuote.
    #[arg(long)]
    pub tdx_qgs: Option<PathBuf>,
    /// With --dry-run: print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The `veil run` settings a confidential launch shares with plain ones.
#[derive(Debug, Clone)]
pub struct Common {
    /// Kernel for SNP measured direct boot (with --firmware).
    pub kernel: Option<PathBuf>,
    /// Its initramfs.
    pub initramfs: Option<PathBuf>,
    /// Its command line (empty: none).
    pub cmdline: Option<String>,
    /// vCPUs.
    pub cpus: u32,
    /// Guest RAM in bytes.
    pub memory: u64,
}

impl ConfidentialArgs {
    /// Whether these flags ask for something only this module does.
    pub fn wanted(&self) -> bool {
        self.platform != Platform::None
            || self.dry_run
            || self.firmware.is_some()
            || self.igvm.is_some()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn parse_48(flag: &str, s: &Option<String>) -> anyhow::Result<[u8; 48]> {
    let mut out = [0u8; 48];
    let Some(s) = s else {
        return Ok(out);
    };
    if s.len() != 96 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{flag} must be 96 hex digits (48 bytes), got {s:?}");
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("checked: hex digits");
    }
    Ok(out)
}

/// This host's CPU signature (CPUID leaf 1 EAX), which KVM puts in RDX at reset.
fn host_cpu_signature() -> u64 {
    u64::from(std::arch::x86_64::__cpuid(1).eax)
}

fn plan(common: &Common, args: &ConfidentialArgs) -> anyhow::Result<LaunchPlan> {
    let cpu_sig = match (&args.cpu.cpu_type, args.cpu.cpu_sig) {
        (None, None) if !args.dry_run => Some(host_cpu_signature()),
        (_, sig) => sig,
    };
    let margs = MeasureArgs {
        payload: PayloadArgs {
            kernel: common.kernel.clone(),
            initramfs: common.initramfs.clone(),
            cmdline: common.cmdline.clone().filter(|c| !c.is_empty()),
            firmware: args.firmware.clone(),
            igvm: args.igvm.clone(),
        },
        platform: args.platform,
        cpus: common.cpus,
        memory: common.memory,
        cpu: CpuArgs {
            cpu_sig,
            ..args.cpu.clone()
        },
        policy: args.policy,
        host_data: args.host_data.clone(),
        trace: false,
        json: false,
    };
    let payload = margs.payload.payload()?;
    let config = vm_config(&margs)?;
    let mut plan = build_plan(&payload, &config)?;
    if let (Some(block), Some(auth)) = (&args.id_block, &args.id_auth) {
        let read = |p: &PathBuf, what: &str, len: usize| -> anyhow::Result<Vec<u8>> {
            let b = std::fs::read(p).with_context(|| format!("{what} {}", p.display()))?;
            if b.len() != len {
                bail!(
                    "{what} {} is {} bytes, expected {len}",
                    p.display(),
                    b.len()
                );
            }
            Ok(b)
        };
        let id_auth = read(auth, "--id-auth", 4096)?;
        plan.id_block = Some(IdBlockPair {
            id_block: read(block, "--id-block", 96)?,
            // The auth block names an author key algorithm when it carries one.
            author_key_enabled: id_auth[4..8] != [0; 4],
            id_auth,
        });
    }
    Ok(plan)
}

fn options(args: &ConfidentialArgs) -> anyhow::Result<LaunchOptions> {
    Ok(LaunchOptions {
        snp: SnpOptions {
            policy: args.policy,
        },
        tdx: TdxOptions {
            attributes: args.tdx_attributes,
            xfam: args.tdx_xfam,
            mrconfigid: parse_48("--mrconfigid", &args.mrconfigid)?,
            mrowner: parse_48("--mrowner", &args.mrowner)?,
            mrownerconfig: parse_48("--mrownerconfig", &args.mrownerconfig)?,
        },
    })
}

/// What `veil run` does with the confidential flags.
#[derive(Debug)]
pub enum Outcome {
    /// Finished (dry run, refusal, usage error) with this exit status.
    Done(i32),
    /// Launch this through `veil_vmm::launch` with the run's devices; print `announce` once the
    /// launch is done.
    Launch {
        /// The payload.
        payload: Box<Payload>,
        /// The expected digest, for the user.
        announce: String,
    },
}

/// Handles `veil run` for a confidential platform: the host check (before anything is read or
/// created), the plan, and a dry run; or the payload to launch.
pub fn prepare(common: Common, args: &ConfidentialArgs) -> anyhow::Result<Outcome> {
    if args.platform == Platform::None {
        return Ok(Outcome::Done(super::usage_error(
            &"--dry-run, --firmware and --igvm need --platform sev-snp or --platform tdx (a \
              plain firmware boot is not in this build)",
        )));
    }
    if args.platform == Platform::Tdx && args.policy.is_some() {
        return Ok(Outcome::Done(super::usage_error(
            &"--policy is the SEV-SNP guest policy; a TD takes --tdx-attributes",
        )));
    }
    if args.platform == Platform::SevSnp
        && (args.tdx_attributes.is_some() || args.tdx_xfam.is_some() || args.tdx_qgs.is_some())
    {
        return Ok(Outcome::Done(super::usage_error(
            &"--tdx-attributes, --tdx-xfam and --tdx-qgs are for --platform tdx",
        )));
    }
    if !args.dry_run {
        // Refuse an incapable host before reading payloads or creating anything.
        if let Err(missing) = backend::check_host(args.platform) {
            eprintln!("veil: error: {missing}");
            eprintln!(
                "veil: nothing was created. `veil host-check` lists this host's facts; \
                 `veil run --dry-run ...` replays the launch through the platform model on any host."
            );
            return Ok(Outcome::Done(1));
        }
    }
    let plan = plan(&common, args)?;
    let opts = options(args)?;
    if args.dry_run {
        return print_dry_run(&plan, &opts, args.json).map(Outcome::Done);
    }
    let expected = measure::digest(&plan, None)?;
    let what = match plan.platform {
        Platform::Tdx => "TD launched; expected MRTD",
        _ => "SEV-SNP guest launched; expected launch digest",
    };
    Ok(Outcome::Launch {
        payload: Box::new(Payload::Confidential(ConfidentialLaunch {
            plan: Arc::new(plan),
            options: opts,
            quote_service: args.tdx_qgs.clone(),
        })),
        announce: format!("veil: {what} {}", hex(&expected)),
    })
}

fn print_dry_run(plan: &LaunchPlan, opts: &LaunchOptions, json: bool) -> anyhow::Result<i32> {
    let run = dry_run::run(plan, opts).map_err(|e| {
        anyhow::anyhow!(
            "the {} platform model refused the launch, as the platform would: {e}",
            plan.platform
        )
    })?;
    let expected = measure::digest(plan, None)?;
    let agrees = run.digest == expected;
    let what = match plan.platform {
        Platform::Tdx => "mrtd",
        _ => "launch digest",
    };
    if json {
        let out = serde_json::json!({
            "platform": plan.platform.name(),
            "digest": hex(&run.digest),
            "measure_digest": hex(&expected),
            "agrees_with_measure": agrees,
            "commands": run.log,
            "notes": run.notes,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "veil: dry run of a {} launch through the platform model (nothing is created, no guest runs)",
            plan.platform
        )?;
        for (i, l) in run.log.iter().enumerate() {
            writeln!(out, "{:>6}  {l}", i + 1)?;
        }
        for n in &run.notes {
            writeln!(out, "note: {n}")?;
        }
        writeln!(out, "{what}: {}", hex(&run.digest))?;
    }
    if !agrees {
        eprintln!(
            "veil: error: the model's {what} {} differs from `veil measure`'s {}: the launch \
             sequence and the offline measurement disagree",
            hex(&run.digest),
            hex(&expected)
        );
        return Ok(1);
    }
    Ok(0)
}

//! `veil attest verify`: check an SEV-SNP report (or a TDX quote) against what the relying party
//! expects and print a verdict naming every check. Exit status 0 only when every check passes.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::measure::{CpuArgs, MeasureArgs, PayloadArgs, parse_size, vm_config};
use veil_firmware::{Platform, build_plan};
use veil_launch::attest::{
    CaChain, Cert, Product, SnpExpectations, SnpReport, Tcb, Verdict, report_data_from_spec, tdx,
    verify_snp_report,
};

/// Subcommands of `veil attest`.
#[derive(Debug, clap::Subcommand)]
pub enum AttestCommand {
    /// Verify an SEV-SNP attestation report (--report) or a TDX quote (--quote).
    Verify(Box<VerifyArgs>),
}

/// Arguments of `veil attest verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// SEV-SNP attestation report: 1184 raw bytes, or hex text.
    #[arg(long, required_unless_present = "quote", conflicts_with = "quote")]
    pub report: Option<PathBuf>,
    /// TDX DCAP quote (v4 or v5), raw bytes or hex text.
    #[arg(long)]
    pub quote: Option<PathBuf>,
    /// VCEK or VLEK certificate that signed the report (DER or PEM).
    #[arg(long)]
    pub vcek: Option<PathBuf>,
    /// ASK and ARK in one PEM file, used instead of AMD's built-in chain.
    #[arg(long, conflicts_with = "product")]
    pub chain: Option<PathBuf>,
    /// Use AMD's built-in ARK/ASK of this product (default: from the report or the VCEK).
    #[arg(long)]
    pub product: Option<Product>,
    /// Expected launch measurement, hex (SNP: 48 bytes; TDX: MRTD, 48 bytes).
    #[arg(long)]
    pub measurement: Option<String>,
    /// Expected HOST_DATA, hex (32 bytes).
    #[arg(long)]
    pub host_data: Option<String>,
    /// Expected REPORT_DATA, hex (64 bytes; shorter values are zero-padded).
    #[arg(long, conflicts_with = "report_data_from")]
    pub report_data: Option<String>,
    /// Expected REPORT_DATA = SHA-512(nonce || key), given as `nonce=HEX,key=HEX`.
    #[arg(long)]
    pub report_data_from: Option<String>,
    /// Minimum reported TCB: `bl=N,tee=N,snp=N,ucode=N[,fmc=N]` or 16 hex digits (raw).
    #[arg(long)]
    pub min_tcb: Option<String>,
    /// Accept a guest whose policy allows debugging.
    #[arg(long)]
    pub allow_debug: bool,
    /// Reject a guest whose policy allows SMT.
    #[arg(long)]
    pub deny_smt: bool,
    /// Accept a guest whose policy allows a migration agent.
    #[arg(long)]
    pub allow_migration_agent: bool,
    /// Expected VMPL of the report's requester.
    #[arg(long)]
    pub vmpl: Option<u32>,
    /// Expected ID key digest, hex (48 bytes), when an ID block was used.
    #[arg(long)]
    pub id_key_digest: Option<String>,
    /// Expected author key digest, hex (48 bytes).
    #[arg(long)]
    pub author_key_digest: Option<String>,
    /// TDX: expected RTMR values, `N=HEX` (repeatable, N in 0..=3).
    #[arg(long = "rtmr")]
    pub rtmrs: Vec<String>,
    /// TDX: expected MRCONFIGID, hex (48 bytes).
    #[arg(long)]
    pub mr_config_id: Option<String>,
    /// TDX: expected MROWNER, hex (48 bytes).
    #[arg(long)]
    pub mr_owner: Option<String>,
    /// TDX: skip the Intel PCK chain check (e.g. a test quote whose chain is not Intel's).
    #[arg(long)]
    pub no_pck_chain: bool,
    /// Print the verdict as JSON.
    #[arg(long)]
    pub json: bool,
    /// Compute the expected measurement from this payload, as `veil measure` does (instead of
    /// --measurement): SEV-SNP launch digest for --report, MRTD for --quote.
    #[command(flatten)]
    pub payload: PayloadArgs,
    /// With a payload: number of vCPUs of the launch.
    #[arg(long, default_value_t = 1)]
    pub cpus: u32,
    /// With a payload: guest memory (e.g. 512M, 2G).
    #[arg(long, default_value = "512M", value_parser = parse_size)]
    pub memory: u64,
    /// With a payload (SEV-SNP): the VMSAs' CPU signature and SEV features.
    #[command(flatten)]
    pub cpu: CpuArgs,
}

impl VerifyArgs {
    fn has_payload(&self) -> bool {
        let p = &self.payload;
        p.firmware.is_some() || p.igvm.is_some() || p.kernel.is_some()
    }

    /// The expected measurement: --measurement, or the digest of the payload flags.
    fn expected_measurement(&self, platform: Platform) -> anyhow::Result<Option<[u8; 48]>> {
        if !self.has_payload() {
            return opt_hex::<48>("measurement", &self.measurement);
        }
        if self.measurement.is_some() {
            bail!(
                "give either --measurement or payload flags (--firmware, --igvm, --kernel), not both"
            );
        }
        let m = MeasureArgs {
            payload: self.payload.clone(),
            platform,
            cpus: self.cpus,
            memory: self.memory,
            cpu: self.cpu.clone(),
            policy: None,
            host_data: None,
            trace: false,
            json: false,
        };
        let config = vm_config(&m)?;
        let plan = build_plan(&m.payload.payload()?, &config)?;
        Ok(Some(veil_firmware::measure::digest(&plan, None)?))
    }
}

/// Runs the subcommand.
pub fn execute(cmd: AttestCommand) -> anyhow::Result<i32> {
    match cmd {
        AttestCommand::Verify(args) => {
            let verdict = if let Some(quote) = &args.quote {
                verify_tdx(quote, &args)?
            } else if let Some(report) = &args.report {
                verify_snp(report, &args)?
            } else {
                bail!("give --report (SEV-SNP) or --quote (TDX)");
            };
            let text = if args.json {
                format!("{}\n", serde_json::to_string_pretty(&verdict)?)
            } else {
                verdict.to_string()
            };
            std::io::stdout()
                .lock()
                .write_all(text.as_bytes())
                .context("writing the verdict")?;
            Ok(if verdict.passed { 0 } else { 1 })
        }
    }
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{what} {}", path.display()))
}

/// Parses hex of exactly `N` bytes (or up to `N` bytes, zero-padded, when `pad`).
fn hex_arg<const N: usize>(flag: &str, text: &str, pad: bool) -> anyhow::Result<[u8; N]> {
    let text = text.trim();
    let text = text.strip_prefix("0x").unwrap_or(text);
    let bytes = hex::decode(text).with_context(|| format!("--{flag}: not hex"))?;
    if bytes.len() > N || (!pad && bytes.len() != N) {
        bail!("--{flag}: {} bytes given, expected {N}", bytes.len());
    }
    let mut out = [0u8; N];
    out[..bytes.len()].copy_from_slice(&bytes);
    Ok(out)
}

fn opt_hex<const N: usize>(flag: &str, v: &Option<String>) -> anyhow::Result<Option<[u8; N]>> {
    v.as_deref()
        .map(|t| hex_arg::<N>(flag, t, false))
        .transpose()
}

fn report_data(args: &VerifyArgs) -> anyhow::Result<Option<[u8; 64]>> {
    if let Some(spec) = &args.report_data_from {
        return Ok(Some(
            report_data_from_spec(spec).context("--report-data-from")?,
        ));
    }
    args.report_data
        .as_deref()
        .map(|t| hex_arg::<64>("report-data", t, true))
        .transpose()
}

fn product_from_vcek(vcek: &Cert) -> Option<Product> {
    let name = vcek.vek_extensions().ok()?.product_name?;
    name.split('-').next()?.parse().ok()
}

fn verify_snp(path: &Path, args: &VerifyArgs) -> anyhow::Result<Verdict> {
    let report = SnpReport::parse_file_contents(&read(path, "report")?)
        .with_context(|| format!("report {}", path.display()))?;
    let Some(vcek_path) = &args.vcek else {
        bail!(
            "--vcek is required with --report: the VCEK or VLEK certificate (DER or PEM) of the signing chip"
        );
    };
    let mut vcek = Cert::from_bytes("VCEK", &read(vcek_path, "VCEK")?)
        .with_context(|| format!("--vcek {}", vcek_path.display()))?;
    if vcek.vek_extensions().is_ok_and(|e| e.csp_id.is_some()) {
        vcek.label = "VLEK".into();
    }
    let product = args
        .product
        .or_else(|| report.cpuid_product())
        .or_else(|| product_from_vcek(&vcek));
    let chain = match (&args.chain, product) {
        (Some(file), _) => CaChain::from_pem(&read(file, "chain")?, &file.display().to_string())
            .with_context(|| format!("--chain {}", file.display()))?,
        (None, Some(p)) => CaChain::builtin(p)?,
        (None, None) => bail!(
            "cannot tell the product (Milan, Genoa, Turin) from the report or the VCEK: give --product or --chain"
        ),
    };
    let layout = report.tcb_layout(product);
    let exp = SnpExpectations {
        measurement: args.expected_measurement(Platform::SevSnp)?,
        host_data: opt_hex::<32>("host-data", &args.host_data)?,
        report_data: report_data(args)?,
        min_tcb: args
            .min_tcb
            .as_deref()
            .map(|t| Tcb::parse(t, layout))
            .transpose()
            .context("--min-tcb")?,
        allow_debug: args.allow_debug,
        allow_smt: !args.deny_smt,
        allow_migration_agent: args.allow_migration_agent,
        vmpl: args.vmpl,
        id_key_digest: opt_hex::<48>("id-key-digest", &args.id_key_digest)?,
        author_key_digest: opt_hex::<48>("author-key-digest", &args.author_key_digest)?,
        product,
        ..SnpExpectations::default()
    };
    Ok(verify_snp_report(&report, &vcek, &chain, &exp))
}

fn verify_tdx(path: &Path, args: &VerifyArgs) -> anyhow::Result<Verdict> {
    let bytes = read(path, "quote")?;
    let quote = tdx::Quote::parse_file_contents(&bytes)
        .with_context(|| format!("quote {}", path.display()))?;
    let mut rtmrs = [None; 4];
    for item in &args.rtmrs {
        let (n, value) = item
            .split_once('=')
            .with_context(|| format!("--rtmr {item:?}: expected N=HEX"))?;
        let n: usize = n
            .trim()
            .parse()
            .ok()
            .filter(|n| *n < 4)
            .with_context(|| format!("--rtmr {item:?}: N must be 0, 1, 2 or 3"))?;
        rtmrs[n] = Some(hex_arg::<48>("rtmr", value, false)?);
    }
    let exp = tdx::TdxExpectations {
        mrtd: args.expected_measurement(Platform::Tdx)?,
        rtmrs,
        mr_config_id: opt_hex::<48>("mr-config-id", &args.mr_config_id)?,
        mr_owner: opt_hex::<48>("mr-owner", &args.mr_owner)?,
        report_data: report_data(args)?,
        allow_debug: args.allow_debug,
        check_pck_chain: !args.no_pck_chain,
        ..tdx::TdxExpectations::default()
    };
    Ok(tdx::verify_quote(&quote, &exp))
}

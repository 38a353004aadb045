//! Verifying an SEV-SNP report: signature, key chain, VCEK/report consistency and the relying
//! party's policy. Every check lands in the [`Verdict`] by name; none stops the others.

use std::time::SystemTime;

use p384::ecdsa::signature::Verifier;

use super::certs::{CaChain, Cert, VekExtensions};
use super::snp_report::{Product, SIG_ALGO_ECDSA_P384_SHA384, SigningKey, SnpReport};
use super::tcb::{Tcb, TcbLayout};
use super::verdict::{Status, Verdict};

/// What the relying party expects. `None` means "not checked" (reported as skipped).
#[derive(Debug, Clone)]
pub struct SnpExpectations {
    /// Launch digest (`veil measure`).
    pub measurement: Option<[u8; 48]>,
    /// HOST_DATA given at SNP_LAUNCH_FINISH.
    pub host_data: Option<[u8; 32]>,
    /// REPORT_DATA (a nonce, or [`super::binding::report_data_for`]).
    pub report_data: Option<[u8; 64]>,
    /// Minimum reported TCB, component by component.
    pub min_tcb: Option<Tcb>,
    /// Accept policy DEBUG = 1.
    pub allow_debug: bool,
    /// Accept policy SMT = 1.
    pub allow_smt: bool,
    /// Accept policy MIGRATE_MA = 1.
    pub allow_migration_agent: bool,
    /// Exact VMPL that requested the report.
    pub vmpl: Option<u32>,
    /// ID key digest (an ID block was used).
    pub id_key_digest: Option<[u8; 48]>,
    /// Author key digest.
    pub author_key_digest: Option<[u8; 48]>,
    /// Product (TCB layout) when the report does not say (version 2).
    pub product: Option<Product>,
    /// "Now", for certificate validity.
    pub now: SystemTime,
}

impl Default for SnpExpectations {
    fn default() -> Self {
        SnpExpectations {
            measurement: None,
            host_data: None,
            report_data: None,
            min_tcb: None,
            allow_debug: false,
            allow_smt: true,
            allow_migration_agent: false,
            vmpl: None,
            id_key_digest: None,
            author_key_digest: None,
            product: None,
            now: SystemTime::now(),
        }
    }
}

/// Verifies `report`, signed by `vek` (VCEK or VLEK) which `chain` certifies, against `exp`.
pub fn verify_snp_report(
    report: &SnpReport,
    vek: &Cert,
    chain: &CaChain,
    exp: &SnpExpectations,
) -> Verdict {
    let mut v = Verdict::new(format!("SEV-SNP attestation report v{}", report.version));
    let layout = report.tcb_layout(exp.product);
    facts(&mut v, report, layout);

    // The signature and the key hierarchy.
    v.check(
        "signature_algorithm",
        report.sig_algo == SIG_ALGO_ECDSA_P384_SHA384,
        format!("sig_algo {} (1 = ECDSA P-384 SHA-384)", report.sig_algo),
    );
    let exts = vek.vek_extensions();
    check_signing_key(&mut v, report, exts.as_ref().ok());
    match chain.verify_vek(vek) {
        Ok(()) => v.check(
            "cert_chain",
            true,
            format!("ARK -> ASK -> {} ({} chain)", vek.label, chain.source),
        ),
        Err(e) => v.check("cert_chain", false, e.to_string()),
    }
    let validity: Result<(), String> = [&chain.ark, &chain.ask, vek]
        .iter()
        .try_for_each(|c| c.check_validity(exp.now))
        .map_err(|e| e.to_string());
    match validity {
        Ok(()) => v.check("cert_validity", true, "ARK, ASK and VEK valid now"),
        Err(e) => v.check("cert_validity", false, e),
    }
    match check_signature(report, vek) {
        Ok(()) => v.check(
            "report_signature",
            true,
            format!(
                "ECDSA P-384 over bytes 0x000..0x29F verifies with the {}",
                vek.label
            ),
        ),
        Err(e) => v.check("report_signature", false, e),
    }
    match &exts {
        Ok(exts) => {
            check_vek_tcb(&mut v, report, exts, layout);
            check_chip_id(&mut v, report, exts);
        }
        Err(e) => {
            v.check("vek_tcb", false, e.to_string());
            v.check("chip_id", false, e.to_string());
        }
    }

    // The relying party's policy.
    compare(
        &mut v,
        "measurement",
        &report.measurement,
        exp.measurement.as_ref().map(|m| &m[..]),
    );
    compare(
        &mut v,
        "host_data",
        &report.host_data,
        exp.host_data.as_ref().map(|m| &m[..]),
    );
    compare(
        &mut v,
        "report_data",
        &report.report_data,
        exp.report_data.as_ref().map(|m| &m[..]),
    );
    let reported = report.reported_tcb(layout);
    match &exp.min_tcb {
        Some(min) => {
            let low = reported.below(min);
            v.check(
                "min_tcb",
                low.is_empty(),
                if low.is_empty() {
                    format!("reported {reported} >= minimum {min}")
                } else {
                    format!(
                        "reported {reported} below minimum {min} in {}",
                        low.join(", ")
                    )
                },
            );
        }
        None => v.push("min_tcb", Status::Skip, "no minimum given"),
    }
    let p = report.policy;
    policy_bit(
        &mut v,
        "debug",
        p.debug_allowed(),
        exp.allow_debug,
        "DEBUG (bit 19)",
    );
    policy_bit(
        &mut v,
        "smt",
        p.smt_allowed(),
        exp.allow_smt,
        "SMT (bit 16)",
    );
    policy_bit(
        &mut v,
        "migration_agent",
        p.migrate_ma_allowed(),
        exp.allow_migration_agent,
        "MIGRATE_MA (bit 18)",
    );
    match exp.vmpl {
        Some(want) => v.check(
            "vmpl",
            report.vmpl == want,
            format!("report requested at VMPL {}, expected {want}", report.vmpl),
        ),
        None => v.push(
            "vmpl",
            Status::Skip,
            format!("VMPL {} (no expectation given)", report.vmpl),
        ),
    }
    compare(
        &mut v,
        "id_key_digest",
        &report.id_key_digest,
        exp.id_key_digest.as_ref().map(|m| &m[..]),
    );
    compare(
        &mut v,
        "author_key_digest",
        &report.author_key_digest,
        exp.author_key_digest.as_ref().map(|m| &m[..]),
    );
    v
}

fn facts(v: &mut Verdict, r: &SnpReport, layout: TcbLayout) {
    v.fact("measurement", hex::encode(r.measurement));
    v.fact("policy", format!("{:#x}", r.policy.0));
    v.fact("host_data", hex::encode(r.host_data));
    v.fact("report_data", hex::encode(r.report_data));
    v.fact("vmpl", r.vmpl.to_string());
    v.fact("guest_svn", r.guest_svn.to_string());
    v.fact("reported_tcb", r.reported_tcb(layout).to_string());
    v.fact(
        "current_tcb",
        Tcb::from_raw(r.current_tcb, layout).to_string(),
    );
    v.fact("chip_id", hex::encode(r.chip_id));
    if let Some((f, m, s)) = r.cpuid {
        v.fact(
            "cpuid",
            format!("family {f:#x} model {m:#x} stepping {s:#x}"),
        );
    }
}

fn check_signing_key(v: &mut Verdict, r: &SnpReport, exts: Option<&VekExtensions>) {
    let is_vlek_cert = exts.is_some_and(|e| e.csp_id.is_some() && e.hw_id.is_none());
    match r.signing_key() {
        SigningKey::Vcek if !is_vlek_cert => v.check("signing_key", true, "VCEK"),
        SigningKey::Vlek if is_vlek_cert => v.check("signing_key", true, "VLEK"),
        SigningKey::Vcek => v.check(
            "signing_key",
            false,
            "report says VCEK but the certificate is a VLEK",
        ),
        SigningKey::Vlek => v.check(
            "signing_key",
            false,
            "report says VLEK but the certificate is not a VLEK (no CSP id)",
        ),
        SigningKey::None => v.check("signing_key", false, "report is unsigned (SIGNING_KEY 7)"),
        SigningKey::Reserved(n) => {
            v.check("signing_key", false, format!("SIGNING_KEY {n} is reserved"))
        }
    }
}

fn check_signature(r: &SnpReport, vek: &Cert) -> Result<(), String> {
    let key = vek.p384_key().map_err(|e| e.to_string())?;
    // R and S are 72-byte little-endian fields holding 48-byte scalars; the rest must be zero.
    if r.sig_r[48..].iter().chain(&r.sig_s[48..]).any(|&b| b != 0) {
        return Err("signature R or S has non-zero bytes above bit 383".into());
    }
    let be = |le: &[u8]| -> p384::FieldBytes {
        let mut out = p384::FieldBytes::default();
        for (o, b) in out.iter_mut().zip(le[..48].iter().rev()) {
            *o = *b;
        }
        out
    };
    let sig = p384::ecdsa::Signature::from_scalars(be(&r.sig_r), be(&r.sig_s))
        .map_err(|_| "signature R or S is not a valid P-384 scalar".to_string())?;
    key.verify(r.signed_bytes(), &sig).map_err(|_| {
        format!(
            "ECDSA P-384 signature does not verify with the {}",
            vek.label
        )
    })
}

fn check_vek_tcb(v: &mut Verdict, r: &SnpReport, e: &VekExtensions, layout: TcbLayout) {
    let t = r.reported_tcb(layout);
    let mut wrong = Vec::new();
    let mut cmp = |name: &str, cert: Option<u8>, rep: u8| match cert {
        Some(c) if c == rep => {}
        Some(c) => wrong.push(format!("{name}: VEK {c} report {rep}")),
        None => wrong.push(format!("{name}: VEK lacks the extension")),
    };
    cmp("bl", e.bootloader, t.bootloader);
    cmp("tee", e.tee, t.tee);
    cmp("snp", e.snp, t.snp);
    cmp("ucode", e.microcode, t.microcode);
    if let Some(fmc) = t.fmc {
        cmp("fmc", e.fmc, fmc);
    }
    if wrong.is_empty() {
        v.check(
            "vek_tcb",
            true,
            format!("VEK TCB extensions equal reported_tcb {t}"),
        );
    } else {
        v.check(
            "vek_tcb",
            false,
            format!("VEK TCB differs from reported_tcb: {}", wrong.join("; ")),
        );
    }
}

fn check_chip_id(v: &mut Verdict, r: &SnpReport, e: &VekExtensions) {
    match &e.hw_id {
        None if e.csp_id.is_some() => {
            v.push("chip_id", Status::Skip, "VLEK: no hardware id to compare")
        }
        None => v.check("chip_id", false, "VCEK has no hwID extension"),
        Some(_) if r.mask_chip_id() => v.push(
            "chip_id",
            Status::Skip,
            "report masks its chip id (MASK_CHIP_ID)",
        ),
        Some(hw) => v.check(
            "chip_id",
            hw[..] == r.chip_id[..],
            if hw[..] == r.chip_id[..] {
                "VCEK hwID equals the report's chip_id".to_string()
            } else {
                format!(
                    "VCEK hwID {} differs from report chip_id {}",
                    hex::encode(hw),
                    hex::encode(r.chip_id)
                )
            },
        ),
    }
}

fn compare(v: &mut Verdict, name: &'static str, actual: &[u8], expected: Option<&[u8]>) {
    match expected {
        None => v.push(name, Status::Skip, "no expectation given"),
        Some(want) if want == actual => {
            v.check(name, true, format!("{} as expected", hex::encode(actual)))
        }
        Some(want) => v.check(
            name,
            false,
            format!(
                "report has {}, expected {}",
                hex::encode(actual),
                hex::encode(want)
            ),
        ),
    }
}

fn policy_bit(v: &mut Verdict, name: &'static str, set: bool, allowed: bool, what: &str) {
    let state = if set { "set" } else { "clear" };
    if set && !allowed {
        v.check(name, false, format!("policy {what} is set but not allowed"));
    } else {
        v.check(name, true, format!("policy {what} is {state}"));
    }
}

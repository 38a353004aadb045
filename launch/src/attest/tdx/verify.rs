//! Verifying a TDX quote: the attestation key's signature, its binding to the quoting enclave,
//! the QE report's PCK signature, the PCK chain to Intel's SGX root, and the TD's measurements.
//! Not done here: the TCB status (Intel's TCB info, QE identity and CRLs are collateral fetched
//! from Intel's service); the verdict says so.

use std::time::{Duration, SystemTime};

use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::der::Encode;
use x509_cert::der::oid::ObjectIdentifier;

use super::quote::Quote;
use crate::attest::certs::pem_certificates;
use crate::attest::verdict::{Status, Verdict};

/// Intel SGX Root CA (DER), the anchor of every PCK chain.
pub const INTEL_SGX_ROOT_CA_DER: &[u8] = include_bytes!("intel_sgx_root_ca.der");

const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");

/// What the relying party expects of a TD. `None` means not checked.
#[derive(Debug, Clone)]
pub struct TdxExpectations {
    /// MRTD (`veil measure --platform tdx`).
    pub mrtd: Option<[u8; 48]>,
    /// RTMR0..3.
    pub rtmrs: [Option<[u8; 48]>; 4],
    /// MRCONFIGID.
    pub mr_config_id: Option<[u8; 48]>,
    /// MROWNER.
    pub mr_owner: Option<[u8; 48]>,
    /// REPORTDATA.
    pub report_data: Option<[u8; 64]>,
    /// Accept TD_ATTRIBUTES.DEBUG.
    pub allow_debug: bool,
    /// Check the PCK chain up to Intel's root (off for test quotes).
    pub check_pck_chain: bool,
    /// "Now", for certificate validity.
    pub now: SystemTime,
}

impl Default for TdxExpectations {
    fn default() -> Self {
        TdxExpectations {
            mrtd: None,
            rtmrs: [None; 4],
            mr_config_id: None,
            mr_owner: None,
            report_data: None,
            allow_debug: false,
            check_pck_chain: true,
            now: SystemTime::now(),
        }
    }
}

fn p256_key_from_xy(xy: &[u8; 64]) -> Result<VerifyingKey, String> {
    let mut sec1 = [0u8; 65];
    sec1[0] = 4;
    sec1[1..].copy_from_slice(xy);
    VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| "not a valid P-256 point".to_string())
}

fn raw_sig(rs: &[u8; 64]) -> Result<Signature, String> {
    Signature::from_slice(rs).map_err(|_| "r or s is not a valid P-256 scalar".to_string())
}

fn cert_key(c: &Certificate) -> Result<VerifyingKey, String> {
    VerifyingKey::from_sec1_bytes(
        c.tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes(),
    )
    .map_err(|_| "certificate key is not P-256".to_string())
}

fn cn(c: &Certificate) -> String {
    c.tbs_certificate.subject.to_string()
}

/// Checks that `issuer` signed `c` (ECDSA P-256 with SHA-256) and that the names chain.
fn cert_signed_by(c: &Certificate, issuer: &Certificate) -> Result<(), String> {
    if c.signature_algorithm.oid != ECDSA_WITH_SHA256 {
        return Err(format!("{}: not ecdsa-with-SHA256", cn(c)));
    }
    if c.tbs_certificate.issuer != issuer.tbs_certificate.subject {
        return Err(format!("{}: issuer is not {}", cn(c), cn(issuer)));
    }
    let sig = Signature::from_der(c.signature.raw_bytes())
        .map_err(|_| format!("{}: malformed signature", cn(c)))?;
    let tbs = c
        .tbs_certificate
        .to_der()
        .map_err(|e| format!("{}: {e}", cn(c)))?;
    cert_key(issuer)?
        .verify(&tbs, &sig)
        .map_err(|_| format!("{} is not signed by {}", cn(c), cn(issuer)))
}

fn valid_at(c: &Certificate, now: SystemTime) -> Result<(), String> {
    let v = &c.tbs_certificate.validity;
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    if now < v.not_before.to_unix_duration() || now > v.not_after.to_unix_duration() {
        return Err(format!("{} is outside its validity period", cn(c)));
    }
    Ok(())
}

/// The PCK chain: leaf <- intermediate <- root, the root being Intel's.
fn check_pck_chain(chain: &[Certificate], now: SystemTime) -> Result<(), String> {
    let [leaf, inter, root] = chain else {
        return Err(format!(
            "PCK chain has {} certificates, expected 3",
            chain.len()
        ));
    };
    let root_der = root.to_der().map_err(|e| e.to_string())?;
    if root_der != INTEL_SGX_ROOT_CA_DER {
        return Err(format!(
            "chain root {} is not Intel's SGX Root CA",
            cn(root)
        ));
    }
    cert_signed_by(root, root)?;
    cert_signed_by(inter, root)?;
    cert_signed_by(leaf, inter)?;
    for c in chain {
        valid_at(c, now)?;
    }
    Ok(())
}

/// Verifies `q` against `exp`; every check is in the verdict by name.
pub fn verify_quote(q: &Quote, exp: &TdxExpectations) -> Verdict {
    let mut v = Verdict::new(format!(
        "TDX quote v{} (body type {})",
        q.version, q.body_type
    ));
    let td = &q.td;
    v.fact("mrtd", hex::encode(td.mrtd));
    for (i, r) in td.rtmr.iter().enumerate() {
        v.fact(&format!("rtmr{i}"), hex::encode(r));
    }
    v.fact("mr_config_id", hex::encode(td.mr_config_id));
    v.fact("mr_owner", hex::encode(td.mr_owner));
    v.fact("td_attributes", format!("{:#018x}", td.td_attributes));
    v.fact("xfam", format!("{:#018x}", td.xfam));
    v.fact("report_data", hex::encode(td.report_data));
    v.fact("mr_seam", hex::encode(td.mr_seam));
    v.fact("tee_tcb_svn", hex::encode(td.tee_tcb_svn));

    let att = p256_key_from_xy(&q.attestation_key)
        .and_then(|k| raw_sig(&q.signature).map(|s| (k, s)))
        .and_then(|(k, s)| {
            k.verify(&q.signed, &s).map_err(|_| {
                "ECDSA P-256 signature over header and TD report does not verify".into()
            })
        });
    match att {
        Ok(()) => v.check(
            "quote_signature",
            true,
            "attestation key signs the header and TD report",
        ),
        Err(e) => v.check("quote_signature", false, e),
    }

    let mut h = Sha256::new();
    h.update(q.attestation_key);
    h.update(&q.qe_auth_data);
    let bound = h.finalize();
    let qd = q.qe_report_data();
    v.check(
        "qe_binding",
        qd[..32] == bound[..] && qd[32..].iter().all(|&b| b == 0),
        if qd[..32] == bound[..] {
            "QE report data = SHA-256(attestation key || QE auth data)".to_string()
        } else {
            "QE report data does not bind the attestation key".to_string()
        },
    );

    let chain = pem_certificates(&q.pck_chain_pem);
    match &chain {
        Ok(certs) if !certs.is_empty() => {
            let qe = cert_key(&certs[0])
                .and_then(|k| raw_sig(&q.qe_report_signature).map(|s| (k, s)))
                .and_then(|(k, s)| {
                    k.verify(&q.qe_report, &s)
                        .map_err(|_| "QE report signature does not verify with the PCK key".into())
                });
            match qe {
                Ok(()) => v.check("qe_report_signature", true, "PCK key signs the QE report"),
                Err(e) => v.check("qe_report_signature", false, e),
            }
            if exp.check_pck_chain {
                match check_pck_chain(certs, exp.now) {
                    Ok(()) => v.check(
                        "pck_chain",
                        true,
                        "PCK -> PCK CA -> Intel SGX Root CA, all valid now",
                    ),
                    Err(e) => v.check("pck_chain", false, e),
                }
            } else {
                v.push("pck_chain", Status::Skip, "not requested (--no-pck-chain)");
            }
        }
        Ok(_) => {
            v.check("qe_report_signature", false, "PCK chain is empty");
            v.check("pck_chain", false, "PCK chain is empty");
        }
        Err(e) => {
            v.check(
                "qe_report_signature",
                false,
                format!("PCK chain unreadable: {e}"),
            );
            v.check("pck_chain", false, format!("PCK chain unreadable: {e}"));
        }
    }
    v.push(
        "tcb_status",
        Status::Skip,
        "needs Intel collateral (TCB info, QE identity, CRLs): not checked offline",
    );

    cmp(
        &mut v,
        "measurement",
        &td.mrtd,
        exp.mrtd.as_ref().map(|m| &m[..]),
    );
    const RTMR: [&str; 4] = ["rtmr0", "rtmr1", "rtmr2", "rtmr3"];
    for (i, name) in RTMR.iter().enumerate() {
        cmp(
            &mut v,
            name,
            &td.rtmr[i],
            exp.rtmrs[i].as_ref().map(|m| &m[..]),
        );
    }
    cmp(
        &mut v,
        "mr_config_id",
        &td.mr_config_id,
        exp.mr_config_id.as_ref().map(|m| &m[..]),
    );
    cmp(
        &mut v,
        "mr_owner",
        &td.mr_owner,
        exp.mr_owner.as_ref().map(|m| &m[..]),
    );
    cmp(
        &mut v,
        "report_data",
        &td.report_data,
        exp.report_data.as_ref().map(|m| &m[..]),
    );
    let debug = td.td_attributes & 1 != 0;
    if debug && !exp.allow_debug {
        v.check("debug", false, "TD_ATTRIBUTES.DEBUG is set but not allowed");
    } else {
        v.check(
            "debug",
            true,
            format!(
                "TD_ATTRIBUTES.DEBUG is {}",
                if debug { "set" } else { "clear" }
            ),
        );
    }
    v
}

fn cmp(v: &mut Verdict, name: &'static str, actual: &[u8], expected: Option<&[u8]>) {
    match expected {
        None => v.push(name, Status::Skip, "no expectation given"),
        Some(w) if w == actual => {
            v.check(name, true, format!("{} as expected", hex::encode(actual)))
        }
        Some(w) => v.check(
            name,
            false,
            format!(
                "quote has {}, expected {}",
                hex::encode(actual),
                hex::encode(w)
            ),
        ),
    }
}

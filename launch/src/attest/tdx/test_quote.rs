//! Test-only TDX quote builder: a generated attestation key, a generated PCK key with a
//! self-made three-certificate chain (not Intel's: verify with the PCK chain check off), and a
//! v4 quote around a chosen TD report. Behind the `test-signer` feature.

use std::str::FromStr;
use std::time::Duration;

use p256::ecdsa::SigningKey;
use p256::ecdsa::signature::Signer;
use p256::pkcs8::EncodePublicKey;
use rand_core::OsRng;
use sha2::{Digest, Sha256};
use x509_cert::der::asn1::BitString;
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::{Decode, Encode, EncodePem};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::Validity;
use x509_cert::{Certificate, TbsCertificate, Version};

use super::quote::{QE_REPORT_LEN, TD10_BODY_LEN, TdReport};
use crate::attest::test_signer::SignerError;

const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");

/// Keys that sign test quotes.
#[derive(Debug)]
pub struct TestQuoteSigner {
    att_key: SigningKey,
    pck_key: SigningKey,
    chain_pem: Vec<u8>,
}

fn e(x: impl std::fmt::Display) -> SignerError {
    SignerError::Encode(x.to_string())
}

fn cert(
    signer: &SigningKey,
    issuer: &str,
    subject: &str,
    key: &SigningKey,
) -> Result<Certificate, SignerError> {
    let alg = AlgorithmIdentifierOwned {
        oid: ECDSA_WITH_SHA256,
        parameters: None,
    };
    let spki_der = key.verifying_key().to_public_key_der().map_err(e)?;
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&[1]).map_err(e)?,
        signature: alg.clone(),
        issuer: Name::from_str(&format!("CN={issuer},O=Veil test")).map_err(e)?,
        validity: Validity::from_now(Duration::from_secs(365 * 24 * 3600)).map_err(e)?,
        subject: Name::from_str(&format!("CN={subject},O=Veil test")).map_err(e)?,
        subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(spki_der.as_bytes())
            .map_err(e)?,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: None,
    };
    let sig: p256::ecdsa::Signature = signer.sign(&tbs.to_der().map_err(e)?);
    Ok(Certificate {
        tbs_certificate: tbs,
        signature_algorithm: alg,
        signature: BitString::from_bytes(sig.to_der().as_bytes()).map_err(e)?,
    })
}

fn put<const N: usize>(out: &mut Vec<u8>, v: &[u8; N]) {
    out.extend_from_slice(v);
}

impl TestQuoteSigner {
    /// Generates an attestation key and a PCK key certified by a generated root and CA.
    pub fn generate() -> Result<Self, SignerError> {
        let root = SigningKey::random(&mut OsRng);
        let ca = SigningKey::random(&mut OsRng);
        let pck_key = SigningKey::random(&mut OsRng);
        let mut chain_pem = Vec::new();
        for c in [
            cert(&ca, "Veil test PCK CA", "Veil test PCK", &pck_key)?,
            cert(&root, "Veil test root", "Veil test PCK CA", &ca)?,
            cert(&root, "Veil test root", "Veil test root", &root)?,
        ] {
            let pem = c.to_pem(x509_cert::der::pem::LineEnding::LF).map_err(e)?;
            chain_pem.extend_from_slice(pem.as_bytes());
        }
        Ok(TestQuoteSigner {
            att_key: SigningKey::random(&mut OsRng),
            pck_key,
            chain_pem,
        })
    }

    /// A signed version-4 quote carrying `td`.
    pub fn quote_v4(&self, td: &TdReport) -> Vec<u8> {
        let mut q = Vec::new();
        q.extend_from_slice(&4u16.to_le_bytes());
        q.extend_from_slice(&2u16.to_le_bytes());
        q.extend_from_slice(&0x81u32.to_le_bytes());
        q.extend_from_slice(&[0; 4]);
        // Intel's QE vendor id.
        q.extend_from_slice(&[
            0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f,
            0x06, 0x07,
        ]);
        q.extend_from_slice(&[0; 20]);
        let start = q.len();
        put(&mut q, &td.tee_tcb_svn);
        put(&mut q, &td.mr_seam);
        put(&mut q, &td.mr_signer_seam);
        q.extend_from_slice(&td.seam_attributes.to_le_bytes());
        q.extend_from_slice(&td.td_attributes.to_le_bytes());
        q.extend_from_slice(&td.xfam.to_le_bytes());
        put(&mut q, &td.mrtd);
        put(&mut q, &td.mr_config_id);
        put(&mut q, &td.mr_owner);
        put(&mut q, &td.mr_owner_config);
        for r in &td.rtmr {
            put(&mut q, r);
        }
        put(&mut q, &td.report_data);
        debug_assert_eq!(q.len() - start, TD10_BODY_LEN);

        let sig: p256::ecdsa::Signature = self.att_key.sign(&q);
        let point = self.att_key.verifying_key().to_encoded_point(false);
        let att_key = &point.as_bytes()[1..];
        let auth = [0x5au8; 32];
        let mut qe_report = [0u8; QE_REPORT_LEN];
        let mut h = Sha256::new();
        h.update(att_key);
        h.update(auth);
        qe_report[320..352].copy_from_slice(&h.finalize());
        let qe_sig: p256::ecdsa::Signature = self.pck_key.sign(&qe_report);

        let mut cert_data = Vec::new();
        cert_data.extend_from_slice(&qe_report);
        cert_data.extend_from_slice(&qe_sig.to_bytes());
        cert_data.extend_from_slice(&(auth.len() as u16).to_le_bytes());
        cert_data.extend_from_slice(&auth);
        cert_data.extend_from_slice(&5u16.to_le_bytes());
        cert_data.extend_from_slice(&(self.chain_pem.len() as u32).to_le_bytes());
        cert_data.extend_from_slice(&self.chain_pem);

        let mut sig_data = Vec::new();
        sig_data.extend_from_slice(&sig.to_bytes());
        sig_data.extend_from_slice(att_key);
        sig_data.extend_from_slice(&6u16.to_le_bytes());
        sig_data.extend_from_slice(&(cert_data.len() as u32).to_le_bytes());
        sig_data.extend_from_slice(&cert_data);
        q.extend_from_slice(&(sig_data.len() as u32).to_le_bytes());
        q.extend_from_slice(&sig_data);
        q
    }
}

/// A TD report with every field zero but the ones a test sets.
pub fn blank_td() -> TdReport {
    TdReport {
        tee_tcb_svn: [0; 16],
        mr_seam: [0; 48],
        mr_signer_seam: [0; 48],
        seam_attributes: 0,
        td_attributes: 0,
        xfam: 0xe7,
        mrtd: [0; 48],
        mr_config_id: [0; 48],
        mr_owner: [0; 48],
        mr_owner_config: [0; 48],
        rtmr: [[0; 48]; 4],
        report_data: [0; 64],
        mr_service_td: None,
    }
}

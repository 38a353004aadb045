//! AMD's SEV-SNP key hierarchy: ARK (self-signed) -> ASK -> VCEK/VLEK, RSA-PSS with SHA-384, and
//! the AMD X.509 extensions of a VCEK that name its TCB and chip.

use std::time::{Duration, SystemTime};

use rsa::pkcs1::RsaPssParams;
use rsa::signature::Verifier;
use x509_cert::Certificate;
use x509_cert::der::asn1::Ia5StringRef;
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::{Decode, Encode};

use super::snp_report::Product;

/// Errors about certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Neither PEM nor DER, or a malformed certificate.
    #[error("{what}: not a readable X.509 certificate (PEM or DER): {reason}")]
    Decode {
        /// Which certificate.
        what: String,
        /// The decoder's words.
        reason: String,
    },
    /// A chain file did not hold exactly an ASK and an ARK.
    #[error("chain file: expected 2 certificates (ASK and ARK, PEM), found {0}")]
    ChainCount(usize),
    /// The built-in ARK/ASK of a product could not be read (a broken build).
    #[error("built-in {0} chain unreadable: {1}")]
    Builtin(&'static str, String),
    /// A signature algorithm other than RSASSA-PSS with SHA-384 and a 48-byte salt.
    #[error("{0}: signature algorithm is not RSASSA-PSS/SHA-384/salt 48 ({1})")]
    Algorithm(String, String),
    /// The issuer's key is not an RSA key.
    #[error("{0}: issuer key is not RSA: {1}")]
    IssuerKey(String, String),
    /// The signature does not verify under the issuer's key.
    #[error("{subject} is not signed by {issuer}: {reason}")]
    Signature {
        /// The certificate checked.
        subject: String,
        /// Its claimed issuer.
        issuer: String,
        /// Why.
        reason: String,
    },
    /// The certificate's issuer name is not its signer's subject name.
    #[error("{0}: issuer name does not match the subject of {1}")]
    IssuerName(String, String),
    /// The VCEK/VLEK key is not an ECDSA P-384 key.
    #[error("{0}: public key is not ECDSA P-384: {1}")]
    EcKey(String, String),
    /// An AMD extension with a malformed value.
    #[error("{cert}: extension {oid} malformed: {reason}")]
    Extension {
        /// Which certificate.
        cert: String,
        /// The extension.
        oid: String,
        /// Why.
        reason: String,
    },
    /// Outside its validity period.
    #[error("{0}: not valid now (valid {1} s to {2} s after the epoch)")]
    Expired(String, u64, u64),
}

const RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");

/// AMD VCEK/VLEK extension OIDs (AMD "VCEK certificate and KDS interface" spec).
pub mod oid {
    use super::ObjectIdentifier;
    /// Struct version.
    pub const STRUCT_VERSION: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.1");
    /// Product name, e.g. "Milan-B0".
    pub const PRODUCT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.2");
    /// Boot loader SPL.
    pub const BL_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.1");
    /// TEE SPL.
    pub const TEE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.2");
    /// SNP SPL.
    pub const SNP_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.3");
    /// Microcode SPL.
    pub const UCODE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.8");
    /// FMC SPL (Turin).
    pub const FMC_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.9");
    /// Hardware id (VCEK only): the chip id, 64 bytes.
    pub const HW_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.4");
    /// Cloud service provider id (VLEK only).
    pub const CSP_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.5");
}

/// One certificate with a name for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cert {
    /// What this certificate is called in messages ("VCEK", "ASK", ...).
    pub label: String,
    /// The decoded certificate.
    pub cert: Certificate,
}

/// The AMD extensions of a VCEK or VLEK.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VekExtensions {
    /// Product name ("Milan-B0").
    pub product_name: Option<String>,
    /// Boot loader SPL.
    pub bootloader: Option<u8>,
    /// TEE SPL.
    pub tee: Option<u8>,
    /// SNP SPL.
    pub snp: Option<u8>,
    /// Microcode SPL.
    pub microcode: Option<u8>,
    /// FMC SPL.
    pub fmc: Option<u8>,
    /// Chip id (VCEK).
    pub hw_id: Option<Vec<u8>>,
    /// CSP id (VLEK).
    pub csp_id: Option<String>,
}

impl Cert {
    /// Decodes one certificate from DER or PEM.
    pub fn from_bytes(label: &str, bytes: &[u8]) -> Result<Self, CertError> {
        let decoded = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
            let all = pem_certificates(bytes).map_err(|e| decode_err(label, e))?;
            match <[Certificate; 1]>::try_from(all) {
                Ok([c]) => c,
                Err(all) => {
                    return Err(CertError::Decode {
                        what: label.to_string(),
                        reason: format!("expected one certificate, found {}", all.len()),
                    });
                }
            }
        } else {
            Certificate::from_der(bytes).map_err(|e| decode_err(label, e))?
        };
        Ok(Cert {
            label: label.to_string(),
            cert: decoded,
        })
    }

    /// DER encoding.
    pub fn to_der(&self) -> Result<Vec<u8>, CertError> {
        self.cert.to_der().map_err(|e| decode_err(&self.label, e))
    }

    /// Checks that `issuer` signed this certificate with RSASSA-PSS/SHA-384 and that the names chain.
    pub fn verify_signed_by(&self, issuer: &Cert) -> Result<(), CertError> {
        let alg = &self.cert.signature_algorithm;
        let bad_alg = |why: String| CertError::Algorithm(self.label.clone(), why);
        if alg.oid != RSASSA_PSS {
            return Err(bad_alg(format!("OID {}", alg.oid)));
        }
        let params = alg
            .parameters
            .as_ref()
            .ok_or_else(|| bad_alg("no PSS parameters".into()))?;
        let params: RsaPssParams = params
            .decode_as()
            .map_err(|e| bad_alg(format!("PSS parameters: {e}")))?;
        if params.hash.oid != SHA384 || params.salt_len != 48 {
            return Err(bad_alg(format!(
                "hash {} salt {}",
                params.hash.oid, params.salt_len
            )));
        }
        if self.cert.tbs_certificate.issuer != issuer.cert.tbs_certificate.subject {
            return Err(CertError::IssuerName(
                self.label.clone(),
                issuer.label.clone(),
            ));
        }
        let spki = issuer
            .cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| CertError::IssuerKey(self.label.clone(), e.to_string()))?;
        let key = <rsa::RsaPublicKey as rsa::pkcs8::DecodePublicKey>::from_public_key_der(&spki)
            .map_err(|e| CertError::IssuerKey(self.label.clone(), e.to_string()))?;
        let verifier = rsa::pss::VerifyingKey::<sha2::Sha384>::new(key);
        let sig_bytes = self.cert.signature.raw_bytes();
        let sig_err = |reason: String| CertError::Signature {
            subject: self.label.clone(),
            issuer: issuer.label.clone(),
            reason,
        };
        let sig = rsa::pss::Signature::try_from(sig_bytes).map_err(|e| sig_err(e.to_string()))?;
        let tbs = self
            .cert
            .tbs_certificate
            .to_der()
            .map_err(|e| sig_err(e.to_string()))?;
        verifier
            .verify(&tbs, &sig)
            .map_err(|_| sig_err("RSA-PSS signature does not verify".into()))
    }

    /// The ECDSA P-384 key of a VCEK/VLEK.
    pub fn p384_key(&self) -> Result<p384::ecdsa::VerifyingKey, CertError> {
        let spki = &self.cert.tbs_certificate.subject_public_key_info;
        p384::ecdsa::VerifyingKey::from_sec1_bytes(spki.subject_public_key.raw_bytes())
            .map_err(|e| CertError::EcKey(self.label.clone(), e.to_string()))
    }

    /// Checks the validity period against `now`.
    pub fn check_validity(&self, now: SystemTime) -> Result<(), CertError> {
        let v = &self.cert.tbs_certificate.validity;
        let from = v.not_before.to_unix_duration();
        let to = v.not_after.to_unix_duration();
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        if now < from || now > to {
            return Err(CertError::Expired(
                self.label.clone(),
                from.as_secs(),
                to.as_secs(),
            ));
        }
        Ok(())
    }

    /// Reads the AMD extensions (absent ones are `None`).
    pub fn vek_extensions(&self) -> Result<VekExtensions, CertError> {
        let mut out = VekExtensions::default();
        let Some(exts) = &self.cert.tbs_certificate.extensions else {
            return Ok(out);
        };
        for ext in exts {
            let value = ext.extn_value.as_bytes();
            let bad = |reason: String| CertError::Extension {
                cert: self.label.clone(),
                oid: ext.extn_id.to_string(),
                reason,
            };
            let spl = || u8::from_der(value).map_err(|e| bad(format!("not a small INTEGER: {e}")));
            let id = ext.extn_id;
            if id == oid::BL_SPL {
                out.bootloader = Some(spl()?);
            } else if id == oid::TEE_SPL {
                out.tee = Some(spl()?);
            } else if id == oid::SNP_SPL {
                out.snp = Some(spl()?);
            } else if id == oid::UCODE_SPL {
                out.microcode = Some(spl()?);
            } else if id == oid::FMC_SPL {
                out.fmc = Some(spl()?);
            } else if id == oid::HW_ID {
                out.hw_id = Some(value.to_vec());
            } else if id == oid::PRODUCT_NAME {
                let s = Ia5StringRef::from_der(value).map_err(|e| bad(e.to_string()))?;
                out.product_name = Some(s.as_str().to_string());
            } else if id == oid::CSP_ID {
                let s = Ia5StringRef::from_der(value).map_err(|e| bad(e.to_string()))?;
                out.csp_id = Some(s.as_str().to_string());
            }
        }
        Ok(out)
    }
}

/// Each `BEGIN/END CERTIFICATE` block of a PEM text, decoded, in order. Text outside the blocks
/// (comments, NUL padding as in TDX quotes) is ignored. (x509-cert's `load_pem_chain` panics on
/// some inputs, e.g. text of only newlines, so it is not used on files.)
pub fn pem_certificates(pem: &[u8]) -> Result<Vec<Certificate>, String> {
    use x509_cert::der::DecodePem;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = std::str::from_utf8(pem).map_err(|_| "PEM text is not UTF-8".to_string())?;
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(b) = rest.find(BEGIN) {
        let after = &rest[b..];
        let e = after
            .find(END)
            .ok_or_else(|| format!("certificate {} has no END line", out.len() + 1))?;
        let block = format!("{}\n", &after[..e + END.len()]);
        let cert = Certificate::from_pem(block.as_bytes())
            .map_err(|e| format!("certificate {}: {e}", out.len() + 1))?;
        out.push(cert);
        rest = &after[e + END.len()..];
    }
    Ok(out)
}

fn decode_err(label: &str, e: impl std::fmt::Display) -> CertError {
    CertError::Decode {
        what: label.to_string(),
        reason: e.to_string(),
    }
}

/// AMD's root (ARK) and intermediate (ASK, or ASVK for VLEKs) certificates.
#[derive(Debug, Clone)]
pub struct CaChain {
    /// The root, self-signed; the trust anchor.
    pub ark: Cert,
    /// The intermediate that signs VCEKs.
    pub ask: Cert,
    /// Where the chain came from ("built-in Milan", a file name).
    pub source: String,
}

impl CaChain {
    /// AMD's published ARK and ASK for a product, as shipped in the `sev` crate.
    pub fn builtin(product: Product) -> Result<Self, CertError> {
        use sev::certs::snp::builtin;
        let (ark, ask) = match product {
            Product::Milan => (builtin::milan::ARK, builtin::milan::ASK),
            Product::Genoa => (builtin::genoa::ARK, builtin::genoa::ASK),
            Product::Turin => (builtin::turin::ARK, builtin::turin::ASK),
        };
        let name = product.name();
        let ark =
            Cert::from_bytes("ARK", ark).map_err(|e| CertError::Builtin(name, e.to_string()))?;
        let ask =
            Cert::from_bytes("ASK", ask).map_err(|e| CertError::Builtin(name, e.to_string()))?;
        Ok(CaChain {
            ark,
            ask,
            source: format!("built-in {name}"),
        })
    }

    /// A PEM file with the ASK and the ARK (either order: the self-signed one is the ARK).
    pub fn from_pem(bytes: &[u8], source: &str) -> Result<Self, CertError> {
        let certs = pem_certificates(bytes).map_err(|e| decode_err(source, e))?;
        if certs.len() != 2 {
            return Err(CertError::ChainCount(certs.len()));
        }
        let self_signed = |c: &Certificate| c.tbs_certificate.issuer == c.tbs_certificate.subject;
        let (ark, ask) = if self_signed(&certs[1]) || !self_signed(&certs[0]) {
            (certs[1].clone(), certs[0].clone())
        } else {
            (certs[0].clone(), certs[1].clone())
        };
        Ok(CaChain {
            ark: Cert {
                label: "ARK".into(),
                cert: ark,
            },
            ask: Cert {
                label: "ASK".into(),
                cert: ask,
            },
            source: source.to_string(),
        })
    }

    /// ARK self-signature, ARK -> ASK, ASK -> VEK: the first failure.
    pub fn verify_vek(&self, vek: &Cert) -> Result<(), CertError> {
        self.ark.verify_signed_by(&self.ark)?;
        self.ask.verify_signed_by(&self.ark)?;
        vek.verify_signed_by(&self.ask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_chains_are_self_consistent() {
        for p in [Product::Milan, Product::Genoa, Product::Turin] {
            let chain = CaChain::builtin(p).unwrap();
            chain.ark.verify_signed_by(&chain.ark).unwrap();
            chain.ask.verify_signed_by(&chain.ark).unwrap();
        }
    }

    #[test]
    fn another_products_ark_does_not_sign_the_ask() {
        let milan = CaChain::builtin(Product::Milan).unwrap();
        let genoa = CaChain::builtin(Product::Genoa).unwrap();
        assert!(matches!(
            milan.ask.verify_signed_by(&genoa.ark),
            Err(CertError::IssuerName(..)) | Err(CertError::Signature { .. })
        ));
    }

    #[test]
    fn odd_pem_text_is_an_error_not_a_panic() {
        // x509-cert's load_pem_chain underflows on these; the splitter here must not.
        assert!(matches!(
            CaChain::from_pem(b"\n\n", "t"),
            Err(CertError::ChainCount(0))
        ));
        assert!(matches!(
            Cert::from_bytes("VCEK", b"-----BEGIN CERTIFICATE-----\n\n"),
            Err(CertError::Decode { .. })
        ));
        assert!(
            pem_certificates(b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----").is_err()
        );
    }

    #[test]
    fn garbage_is_a_decode_error() {
        assert!(matches!(
            Cert::from_bytes("VCEK", b"\x30\x03abc"),
            Err(CertError::Decode { .. })
        ));
    }
}

//! A test-only stand-in for AMD's key hierarchy: a freshly generated ARK -> ASK -> VCEK chain with
//! AMD's algorithms (RSA-PSS SHA-384 for the CAs, ECDSA P-384 for the VCEK) and AMD's VCEK
//! extensions, and a signer that fills and signs reports. Only behind the `test-signer` feature;
//! its certificates say "Veil test" and no real verifier trusts them.

use std::str::FromStr;
use std::time::Duration;

use p384::ecdsa::signature::Signer;
use p384::pkcs8::EncodePublicKey;
use rand_core::OsRng;
use rsa::pss::SigningKey as PssKey;
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use sha2::Sha384;
use x509_cert::der::asn1::{BitString, Ia5StringRef, OctetString};
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::Validity;
use x509_cert::{Certificate, TbsCertificate, Version};

use super::certs::{CaChain, Cert, oid};
use super::snp_report::{Product, REPORT_SIZE, SIGNED_LEN};
use super::tcb::{Tcb, TcbLayout};

/// Errors from building the test chain.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// Key generation failed.
    #[error("test key generation: {0}")]
    KeyGen(String),
    /// Encoding a certificate failed.
    #[error("test certificate encoding: {0}")]
    Encode(String),
}

/// RSA modulus size of the test ARK and ASK (AMD uses 4096; 2048 keeps tests quick).
pub const TEST_RSA_BITS: usize = 2048;

/// A generated chain and its private keys.
#[derive(Debug)]
pub struct TestChain {
    ask_key: PssKey<Sha384>,
    vcek_key: p384::ecdsa::SigningKey,
    /// The CAs.
    pub chain: CaChain,
    /// The VCEK certificate.
    pub vcek: Cert,
    /// The TCB written into the VCEK and into signed reports.
    pub tcb: Tcb,
    /// The chip id written into the VCEK's hwID and into signed reports.
    pub chip_id: [u8; 64],
    /// The product: TCB layout, product name, CPUID of v3+ reports.
    pub product: Product,
    /// VCEK or VLEK.
    pub vek: TestVek,
}

/// What a signed report says; everything else is zero.
#[derive(Debug, Clone)]
pub struct ReportTemplate {
    /// Report version (2 to 5).
    pub version: u32,
    /// Guest policy.
    pub policy: u64,
    /// Launch digest.
    pub measurement: [u8; 48],
    /// HOST_DATA.
    pub host_data: [u8; 32],
    /// REPORT_DATA.
    pub report_data: [u8; 64],
    /// VMPL.
    pub vmpl: u32,
}

impl Default for ReportTemplate {
    fn default() -> Self {
        ReportTemplate {
            version: 2,
            policy: 0x30000,
            measurement: [0; 48],
            host_data: [0; 32],
            report_data: [0; 64],
            vmpl: 0,
        }
    }
}

fn name(cn: &str) -> Result<Name, SignerError> {
    Name::from_str(&format!("CN={cn},O=Veil test,OU=Not AMD"))
        .map_err(|e| SignerError::Encode(e.to_string()))
}

fn ext(
    id: x509_cert::der::oid::ObjectIdentifier,
    value: Vec<u8>,
) -> Result<Extension, SignerError> {
    Ok(Extension {
        extn_id: id,
        critical: false,
        extn_value: OctetString::new(value).map_err(|e| SignerError::Encode(e.to_string()))?,
    })
}

fn enc<T: Encode + ?Sized>(v: &T) -> Result<Vec<u8>, SignerError> {
    v.to_der().map_err(|e| SignerError::Encode(e.to_string()))
}

fn issue(
    signer: &PssKey<Sha384>,
    issuer: &str,
    subject: &str,
    spki: SubjectPublicKeyInfoOwned,
    extensions: Vec<Extension>,
) -> Result<Cert, SignerError> {
    let e = |e: &dyn std::fmt::Display| SignerError::Encode(e.to_string());
    let alg = rsa::pss::get_default_pss_signature_algo_id::<Sha384>().map_err(|x| e(&x))?;
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&[1]).map_err(|x| e(&x))?,
        signature: alg.clone(),
        issuer: name(issuer)?,
        validity: Validity::from_now(Duration::from_secs(365 * 24 * 3600)).map_err(|x| e(&x))?,
        subject: name(subject)?,
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: (!extensions.is_empty()).then_some(extensions),
    };
    let tbs_der = enc(&tbs)?;
    let sig = signer.sign_with_rng(&mut OsRng, &tbs_der);
    let cert = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: alg,
        signature: BitString::from_bytes(&sig.to_bytes()).map_err(|x| e(&x))?,
    };
    Ok(Cert {
        label: if subject.contains("VCEK") {
            "VCEK"
        } else if subject.contains("VLEK") {
            "VLEK"
        } else if subject.contains("ASK") {
            "ASK"
        } else {
            "ARK"
        }
        .into(),
        cert,
    })
}

fn rsa_spki(key: &PssKey<Sha384>) -> Result<SubjectPublicKeyInfoOwned, SignerError> {
    let der = key
        .as_ref()
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| SignerError::Encode(e.to_string()))?;
    SubjectPublicKeyInfoOwned::from_der(der.as_bytes())
        .map_err(|e| SignerError::Encode(e.to_string()))
}

/// Which endorsement key a test chain issues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestVek {
    /// A VCEK with a hwID (the chip id).
    Vcek,
    /// A VLEK with this CSP id and no hwID.
    Vlek(String),
}

impl TestChain {
    /// Generates ARK, ASK and a Milan VCEK for `chip_id` whose TCB extensions say `tcb`.
    pub fn generate(tcb: Tcb, chip_id: [u8; 64]) -> Result<Self, SignerError> {
        Self::generate_with(tcb, chip_id, Product::Milan, TestVek::Vcek)
    }

    /// Generates ARK, ASK and a VCEK or VLEK of `product` (TCB layout and product name).
    pub fn generate_with(
        tcb: Tcb,
        chip_id: [u8; 64],
        product: Product,
        vek: TestVek,
    ) -> Result<Self, SignerError> {
        let rsa = || {
            rsa::RsaPrivateKey::new(&mut OsRng, TEST_RSA_BITS)
                .map(PssKey::<Sha384>::new)
                .map_err(|e| SignerError::KeyGen(e.to_string()))
        };
        let ark_key = rsa()?;
        let ask_key = rsa()?;
        let ark = issue(
            &ark_key,
            "Veil test ARK",
            "Veil test ARK",
            rsa_spki(&ark_key)?,
            vec![],
        )?;
        let ask = issue(
            &ark_key,
            "Veil test ARK",
            "Veil test ASK",
            rsa_spki(&ask_key)?,
            vec![],
        )?;
        let mut chain = TestChain {
            ask_key,
            vcek_key: p384::ecdsa::SigningKey::random(&mut OsRng),
            chain: CaChain {
                ark: ark.clone(),
                ask,
                source: "Veil test".into(),
            },
            vcek: ark,
            tcb,
            chip_id,
            product,
            vek,
        };
        chain.vcek = chain.vcek_for_tcb(tcb)?;
        Ok(chain)
    }

    /// The ASK and ARK as one PEM file (ASK first, as AMD's KDS serves them).
    pub fn chain_pem(&self) -> Result<String, SignerError> {
        use x509_cert::der::EncodePem;
        let mut out = String::new();
        for c in [&self.chain.ask, &self.chain.ark] {
            out += &c
                .cert
                .to_pem(x509_cert::der::pem::LineEnding::LF)
                .map_err(|e| SignerError::Encode(e.to_string()))?;
        }
        Ok(out)
    }

    fn layout(&self) -> TcbLayout {
        match self.product {
            Product::Turin => TcbLayout::Turin,
            _ => TcbLayout::MilanGenoa,
        }
    }

    /// This chain's endorsement key certified by its ASK for `tcb` (another TCB than the
    /// chain's tests the TCB check).
    pub fn vcek_for_tcb(&self, tcb: Tcb) -> Result<Cert, SignerError> {
        let spki_der = self
            .vcek_key
            .verifying_key()
            .to_public_key_der()
            .map_err(|e| SignerError::Encode(e.to_string()))?;
        let spki = SubjectPublicKeyInfoOwned::from_der(spki_der.as_bytes())
            .map_err(|e| SignerError::Encode(e.to_string()))?;
        let name = match self.product {
            Product::Milan => "Milan-B0",
            Product::Genoa => "Genoa-B1",
            Product::Turin => "Turin-C1",
        };
        let product = Ia5StringRef::new(name).map_err(|e| SignerError::Encode(e.to_string()))?;
        let mut exts = vec![
            ext(oid::STRUCT_VERSION, enc(&0u8)?)?,
            ext(oid::PRODUCT_NAME, enc(&product)?)?,
            ext(oid::BL_SPL, enc(&tcb.bootloader)?)?,
            ext(oid::TEE_SPL, enc(&tcb.tee)?)?,
            ext(oid::SNP_SPL, enc(&tcb.snp)?)?,
            ext(oid::UCODE_SPL, enc(&tcb.microcode)?)?,
        ];
        if let Some(fmc) = tcb.fmc {
            exts.push(ext(oid::FMC_SPL, enc(&fmc)?)?);
        }
        let subject = match &self.vek {
            TestVek::Vcek => {
                exts.push(ext(oid::HW_ID, self.chip_id.to_vec())?);
                "Veil test VCEK"
            }
            TestVek::Vlek(csp) => {
                let csp = Ia5StringRef::new(csp).map_err(|e| SignerError::Encode(e.to_string()))?;
                exts.push(ext(oid::CSP_ID, enc(&csp)?)?);
                "Veil test VLEK"
            }
        };
        issue(&self.ask_key, "Veil test ASK", subject, spki, exts)
    }

    /// Builds a report from `t` carrying this chain's TCB and chip id, and signs it.
    pub fn sign_template(&self, t: &ReportTemplate) -> [u8; REPORT_SIZE] {
        let mut r = [0u8; REPORT_SIZE];
        r[0x00..0x04].copy_from_slice(&t.version.to_le_bytes());
        r[0x08..0x10].copy_from_slice(&t.policy.to_le_bytes());
        r[0x30..0x34].copy_from_slice(&t.vmpl.to_le_bytes());
        r[0x34..0x38].copy_from_slice(&1u32.to_le_bytes());
        let tcb = self.tcb.to_raw(self.layout()).to_le_bytes();
        if let TestVek::Vlek(_) = self.vek {
            // SIGNER_INFO.SIGNING_KEY = 1: VLEK.
            r[0x48..0x4C].copy_from_slice(&(1u32 << 2).to_le_bytes());
        }
        r[0x38..0x40].copy_from_slice(&tcb);
        r[0x50..0x90].copy_from_slice(&t.report_data);
        r[0x90..0xC0].copy_from_slice(&t.measurement);
        r[0xC0..0xE0].copy_from_slice(&t.host_data);
        r[0x180..0x188].copy_from_slice(&tcb);
        if t.version >= 3 {
            let cpuid = match self.product {
                Product::Milan => [0x19, 0x01, 0x01],
                Product::Genoa => [0x19, 0x11, 0x01],
                Product::Turin => [0x1A, 0x02, 0x01],
            };
            r[0x188..0x18B].copy_from_slice(&cpuid);
        }
        r[0x1A0..0x1E0].copy_from_slice(&self.chip_id);
        r[0x1E0..0x1E8].copy_from_slice(&tcb);
        r[0x1F0..0x1F8].copy_from_slice(&tcb);
        self.sign(&mut r);
        r
    }

    /// (Re-)signs bytes 0..0x2A0 of `report` with the VCEK key, writing R and S little-endian.
    pub fn sign(&self, report: &mut [u8; REPORT_SIZE]) {
        let sig: p384::ecdsa::Signature = self.vcek_key.sign(&report[..SIGNED_LEN]);
        let (r, s) = sig.split_bytes();
        report[0x2A0..0x4A0].fill(0);
        for (i, b) in r.iter().rev().enumerate() {
            report[0x2A0 + i] = *b;
        }
        for (i, b) in s.iter().rev().enumerate() {
            report[0x2E8 + i] = *b;
        }
    }
}

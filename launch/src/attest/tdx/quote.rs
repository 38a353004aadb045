//! Intel TDX DCAP quotes, versions 4 and 5: header, TD report body and the ECDSA-P256 signature
//! data (attestation key, QE report, QE authentication data, PCK certificate chain).

/// Errors from parsing a quote.
#[derive(Debug, thiserror::Error)]
pub enum QuoteError {
    /// The quote ends before a field it must hold.
    #[error("TDX quote truncated: {field} needs bytes {start}..{end}, quote has {len}")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Its first byte.
        start: usize,
        /// One past its last byte.
        end: usize,
        /// The quote's length.
        len: usize,
    },
    /// A version other than 4 or 5.
    #[error("TDX quote version {0} is not supported (known: 4, 5)")]
    Version(u16),
    /// An SGX quote or another TEE.
    #[error("quote TEE type {0:#x} is not TDX (0x81)")]
    TeeType(u32),
    /// An attestation key type other than ECDSA P-256.
    #[error("attestation key type {0} is not ECDSA-256-with-P-256 (2)")]
    KeyType(u16),
    /// A v5 body type that is not a TD report.
    #[error("TDX quote v5 body type {0} is not a TD report (2, 3 or 4)")]
    BodyType(u16),
    /// A v5 body whose size does not fit its type.
    #[error("TDX quote v5 body type {body_type} has size {size}, expected {expected}")]
    BodySize {
        /// The declared type.
        body_type: u16,
        /// The declared size.
        size: u32,
        /// The size that type has.
        expected: usize,
    },
    /// Certification data of a type other than the one expected.
    #[error("{what}: certification data type {found}, expected {expected}")]
    CertType {
        /// Which certification data.
        what: &'static str,
        /// The declared type.
        found: u16,
        /// The type required.
        expected: u16,
    },
    /// Bytes after the signature data that are not zero padding.
    #[error("TDX quote has {0} non-zero bytes after its signature data")]
    Trailing(usize),
    /// Text input that is not hex.
    #[error("TDX quote file is text but not hex: {0}")]
    Hex(String),
}

const HEADER_LEN: usize = 48;
/// TD 1.0 report body size.
pub const TD10_BODY_LEN: usize = 584;
/// TD 1.5 report body size (adds TEE_TCB_SVN2 and MRSERVICETD).
pub const TD15_BODY_LEN: usize = 648;
/// TD 1.5 extended report body size (v5 body type 4).
pub const TD15_EX_BODY_LEN: usize = 885;
/// QE report (an SGX report body) size.
pub const QE_REPORT_LEN: usize = 384;
/// `tee_type` of a TDX quote.
pub const TEE_TYPE_TDX: u32 = 0x81;
/// `att_key_type` for ECDSA-256-with-P-256.
pub const ATT_KEY_ECDSA_P256: u16 = 2;
const CERT_TYPE_PCK_CHAIN: u16 = 5;
const CERT_TYPE_QE_REPORT: u16 = 6;

/// The TD report fields a relying party compares (the first 584 bytes of every TD body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdReport {
    /// TEE_TCB_SVN.
    pub tee_tcb_svn: [u8; 16],
    /// Measurement of the TDX module.
    pub mr_seam: [u8; 48],
    /// Signer of the TDX module.
    pub mr_signer_seam: [u8; 48],
    /// SEAM attributes.
    pub seam_attributes: u64,
    /// TD attributes (bit 0: DEBUG).
    pub td_attributes: u64,
    /// XFAM.
    pub xfam: u64,
    /// Build-time measurement of the TD (compare with `veil measure --platform tdx`).
    pub mrtd: [u8; 48],
    /// MRCONFIGID.
    pub mr_config_id: [u8; 48],
    /// MROWNER.
    pub mr_owner: [u8; 48],
    /// MROWNERCONFIG.
    pub mr_owner_config: [u8; 48],
    /// Run-time measurement registers 0 to 3.
    pub rtmr: [[u8; 48]; 4],
    /// REPORTDATA.
    pub report_data: [u8; 64],
    /// TD 1.5: MRSERVICETD.
    pub mr_service_td: Option<[u8; 48]>,
}

/// A parsed quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// 4 or 5.
    pub version: u16,
    /// 2: ECDSA P-256.
    pub att_key_type: u16,
    /// 0x81: TDX.
    pub tee_type: u32,
    /// QE vendor id (Intel's QE: 939a7233-f79c-4ca9-940a-0db3957f0607).
    pub qe_vendor_id: [u8; 16],
    /// v5 body type (2 TD 1.0, 3 TD 1.5, 4 TD 1.5 extended); 2 for v4.
    pub body_type: u16,
    /// The TD report.
    pub td: TdReport,
    /// Bytes covered by the attestation key's signature: header (+ v5 body descriptor) + body.
    pub signed: Vec<u8>,
    /// ECDSA P-256 signature, r || s big-endian.
    pub signature: [u8; 64],
    /// Attestation public key, x || y.
    pub attestation_key: [u8; 64],
    /// The quoting enclave's report (signed by the PCK key).
    pub qe_report: [u8; QE_REPORT_LEN],
    /// Signature of the QE report, r || s.
    pub qe_report_signature: [u8; 64],
    /// QE authentication data (hashed with the attestation key into the QE report).
    pub qe_auth_data: Vec<u8>,
    /// The PCK certificate chain, PEM (leaf, intermediate, root).
    pub pck_chain_pem: Vec<u8>,
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], QuoteError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.b.len());
        let Some(end) = end else {
            return Err(QuoteError::Truncated {
                field,
                start: self.at,
                end: self.at.saturating_add(n),
                len: self.b.len(),
            });
        };
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], QuoteError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, QuoteError> {
        Ok(u16::from_le_bytes(self.arr(field)?))
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, QuoteError> {
        Ok(u32::from_le_bytes(self.arr(field)?))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, QuoteError> {
        Ok(u64::from_le_bytes(self.arr(field)?))
    }
}

fn parse_td(body: &[u8], body_type: u16) -> Result<TdReport, QuoteError> {
    let mut r = Reader { b: body, at: 0 };
    let mut td = TdReport {
        tee_tcb_svn: r.arr("tee_tcb_svn")?,
        mr_seam: r.arr("mr_seam")?,
        mr_signer_seam: r.arr("mr_signer_seam")?,
        seam_attributes: r.u64("seam_attributes")?,
        td_attributes: r.u64("td_attributes")?,
        xfam: r.u64("xfam")?,
        mrtd: r.arr("mrtd")?,
        mr_config_id: r.arr("mr_config_id")?,
        mr_owner: r.arr("mr_owner")?,
        mr_owner_config: r.arr("mr_owner_config")?,
        rtmr: [
            r.arr("rtmr0")?,
            r.arr("rtmr1")?,
            r.arr("rtmr2")?,
            r.arr("rtmr3")?,
        ],
        report_data: r.arr("report_data")?,
        mr_service_td: None,
    };
    if body_type >= 3 {
        let _tee_tcb_svn2: [u8; 16] = r.arr("tee_tcb_svn2")?;
        td.mr_service_td = Some(r.arr("mr_service_td")?);
    }
    Ok(td)
}

impl Quote {
    /// Parses a binary quote.
    pub fn parse(b: &[u8]) -> Result<Self, QuoteError> {
        let mut r = Reader { b, at: 0 };
        let version = r.u16("version")?;
        if version != 4 && version != 5 {
            return Err(QuoteError::Version(version));
        }
        let att_key_type = r.u16("att_key_type")?;
        let tee_type = r.u32("tee_type")?;
        if tee_type != TEE_TYPE_TDX {
            return Err(QuoteError::TeeType(tee_type));
        }
        if att_key_type != ATT_KEY_ECDSA_P256 {
            return Err(QuoteError::KeyType(att_key_type));
        }
        r.take(4, "reserved")?;
        let qe_vendor_id = r.arr("qe_vendor_id")?;
        r.take(20, "user_data")?;
        debug_assert_eq!(r.at, HEADER_LEN);
        let (body_type, body_len) = if version == 4 {
            (2, TD10_BODY_LEN)
        } else {
            let body_type = r.u16("body_type")?;
            let size = r.u32("body_size")?;
            let expected = match body_type {
                2 => TD10_BODY_LEN,
                3 => TD15_BODY_LEN,
                4 => TD15_EX_BODY_LEN,
                other => return Err(QuoteError::BodyType(other)),
            };
            if size as usize != expected {
                return Err(QuoteError::BodySize {
                    body_type,
                    size,
                    expected,
                });
            }
            (body_type, expected)
        };
        let body = r.take(body_len, "td_report")?;
        let td = parse_td(body, body_type)?;
        let signed = b[..r.at].to_vec();
        let sig_len = r.u32("signature_data_len")? as usize;
        let sig_start = r.at;
        let signature = r.arr("quote_signature")?;
        let attestation_key = r.arr("attestation_key")?;
        let cert_type = r.u16("certification_data_type")?;
        if cert_type != CERT_TYPE_QE_REPORT {
            return Err(QuoteError::CertType {
                what: "signature data",
                found: cert_type,
                expected: CERT_TYPE_QE_REPORT,
            });
        }
        let _cert_size = r.u32("certification_data_size")?;
        let qe_report = r.arr("qe_report")?;
        let qe_report_signature = r.arr("qe_report_signature")?;
        let auth_len = r.u16("qe_auth_data_len")? as usize;
        let qe_auth_data = r.take(auth_len, "qe_auth_data")?.to_vec();
        let inner_type = r.u16("pck_certification_data_type")?;
        if inner_type != CERT_TYPE_PCK_CHAIN {
            return Err(QuoteError::CertType {
                what: "QE certification data",
                found: inner_type,
                expected: CERT_TYPE_PCK_CHAIN,
            });
        }
        let chain_len = r.u32("pck_chain_len")? as usize;
        let pck_chain_pem = r.take(chain_len, "pck_chain")?.to_vec();
        // The declared signature-data length must cover what was read.
        let sig_end = sig_start.saturating_add(sig_len);
        if r.at > sig_end {
            return Err(QuoteError::Truncated {
                field: "signature_data (declared length)",
                start: sig_start,
                end: r.at,
                len: sig_end,
            });
        }
        let rest = &b[r.at..];
        let nonzero = rest.iter().filter(|&&x| x != 0).count();
        if nonzero != 0 {
            return Err(QuoteError::Trailing(nonzero));
        }
        Ok(Quote {
            version,
            att_key_type,
            tee_type,
            qe_vendor_id,
            body_type,
            td,
            signed,
            signature,
            attestation_key,
            qe_report,
            qe_report_signature,
            qe_auth_data,
            pck_chain_pem,
        })
    }

    /// Parses a quote file: raw bytes, or hex text (whitespace ignored).
    pub fn parse_file_contents(bytes: &[u8]) -> Result<Self, QuoteError> {
        let text: Vec<u8> = bytes
            .iter()
            .copied()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        if text.len() >= 2 * HEADER_LEN && text.iter().all(u8::is_ascii_hexdigit) {
            let raw = hex::decode(&text).map_err(|e| QuoteError::Hex(e.to_string()))?;
            return Self::parse(&raw);
        }
        Self::parse(bytes)
    }

    /// The QE report's REPORTDATA (bytes 320..384).
    pub fn qe_report_data(&self) -> &[u8] {
        &self.qe_report[320..384]
    }
}

//! The SEV-SNP attestation report (ATTESTATION_REPORT, 0x4A0 bytes, versions 2 to 5): parsing
//! into named fields while keeping the raw bytes the signature covers.

use super::tcb::{Tcb, TcbLayout};

/// Size of a report.
pub const REPORT_SIZE: usize = 0x4A0;
/// Bytes 0..SIGNED_LEN are covered by the signature.
pub const SIGNED_LEN: usize = 0x2A0;
/// Oldest report version understood.
pub const MIN_VERSION: u32 = 2;
/// Newest report version understood (ABI 1.57: adds the mitigation vectors).
pub const MAX_VERSION: u32 = 5;
/// `sig_algo` value for ECDSA P-384 with SHA-384.
pub const SIG_ALGO_ECDSA_P384_SHA384: u32 = 1;

/// Errors from parsing a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The input is not 0x4A0 bytes.
    #[error("SNP report is {0} bytes; an attestation report is exactly 1184 (0x4A0) bytes")]
    Size(usize),
    /// The version field holds a version this verifier does not know.
    #[error("SNP report version {0} is not supported (known versions: 2 to 5)")]
    Version(u32),
    /// Text input that is neither raw bytes nor hex.
    #[error("SNP report file is text but not hex: {0}")]
    Hex(String),
}

/// Guest policy bits (ABI spec, table "GUEST_POLICY").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Policy(pub u64);

impl Policy {
    /// Bit 16: SMT allowed.
    pub fn smt_allowed(self) -> bool {
        self.0 & (1 << 16) != 0
    }
    /// Bit 18: association with a migration agent allowed.
    pub fn migrate_ma_allowed(self) -> bool {
        self.0 & (1 << 18) != 0
    }
    /// Bit 19: debugging allowed (the hypervisor may read guest memory).
    pub fn debug_allowed(self) -> bool {
        self.0 & (1 << 19) != 0
    }
    /// Bit 20: single socket only.
    pub fn single_socket(self) -> bool {
        self.0 & (1 << 20) != 0
    }
    /// Minimum ABI as (major, minor).
    pub fn abi(self) -> (u8, u8) {
        (((self.0 >> 8) & 0xff) as u8, (self.0 & 0xff) as u8)
    }
}

/// Which key signed the report (SIGNER_INFO bits 4:2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum SigningKey {
    /// Versioned chip endorsement key.
    Vcek,
    /// Versioned loaded endorsement key.
    Vlek,
    /// No key (the report is unsigned).
    None,
    /// A value the ABI reserves.
    Reserved(u8),
}

/// A parsed report. Field offsets follow the SEV-SNP firmware ABI; all integers little-endian.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpReport {
    /// The raw report as received.
    pub raw: [u8; REPORT_SIZE],
    /// @0x00.
    pub version: u32,
    /// @0x04.
    pub guest_svn: u32,
    /// @0x08.
    pub policy: Policy,
    /// @0x10.
    pub family_id: [u8; 16],
    /// @0x20.
    pub image_id: [u8; 16],
    /// @0x30: the VMPL that requested the report.
    pub vmpl: u32,
    /// @0x34.
    pub sig_algo: u32,
    /// @0x38, raw.
    pub current_tcb: u64,
    /// @0x40.
    pub platform_info: u64,
    /// @0x48.
    pub signer_info: u32,
    /// @0x50.
    pub report_data: [u8; 64],
    /// @0x90.
    pub measurement: [u8; 48],
    /// @0xC0.
    pub host_data: [u8; 32],
    /// @0xE0.
    pub id_key_digest: [u8; 48],
    /// @0x110.
    pub author_key_digest: [u8; 48],
    /// @0x140.
    pub report_id: [u8; 32],
    /// @0x160.
    pub report_id_ma: [u8; 32],
    /// @0x180, raw: the TCB the signing VCEK was derived from.
    pub reported_tcb: u64,
    /// @0x188..0x18B (version 3+): CPUID family, model, stepping.
    pub cpuid: Option<(u8, u8, u8)>,
    /// @0x1A0 (zero when MASK_CHIP_ID is set).
    pub chip_id: [u8; 64],
    /// @0x1E0, raw.
    pub committed_tcb: u64,
    /// @0x1F0, raw.
    pub launch_tcb: u64,
    /// Signature R, little-endian, @0x2A0.
    pub sig_r: [u8; 72],
    /// Signature S, little-endian, @0x2E8.
    pub sig_s: [u8; 72],
}

fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(arr(b, at))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(arr(b, at))
}

impl SnpReport {
    /// Parses a binary report: exactly 0x4A0 bytes, version 2 to 5.
    pub fn parse(bytes: &[u8]) -> Result<Self, ReportError> {
        let raw: [u8; REPORT_SIZE] = bytes
            .try_into()
            .map_err(|_| ReportError::Size(bytes.len()))?;
        let b = &raw[..];
        let version = u32_at(b, 0x00);
        if !(MIN_VERSION..=MAX_VERSION).contains(&version) {
            return Err(ReportError::Version(version));
        }
        Ok(SnpReport {
            raw,
            version,
            guest_svn: u32_at(b, 0x04),
            policy: Policy(u64_at(b, 0x08)),
            family_id: arr(b, 0x10),
            image_id: arr(b, 0x20),
            vmpl: u32_at(b, 0x30),
            sig_algo: u32_at(b, 0x34),
            current_tcb: u64_at(b, 0x38),
            platform_info: u64_at(b, 0x40),
            signer_info: u32_at(b, 0x48),
            report_data: arr(b, 0x50),
            measurement: arr(b, 0x90),
            host_data: arr(b, 0xC0),
            id_key_digest: arr(b, 0xE0),
            author_key_digest: arr(b, 0x110),
            report_id: arr(b, 0x140),
            report_id_ma: arr(b, 0x160),
            reported_tcb: u64_at(b, 0x180),
            cpuid: (version >= 3).then(|| (b[0x188], b[0x189], b[0x18A])),
            chip_id: arr(b, 0x1A0),
            committed_tcb: u64_at(b, 0x1E0),
            launch_tcb: u64_at(b, 0x1F0),
            sig_r: arr(b, 0x2A0),
            sig_s: arr(b, 0x2E8),
        })
    }

    /// Parses a report file: raw bytes, or hex text (whitespace ignored) as tools often store it.
    pub fn parse_file_contents(bytes: &[u8]) -> Result<Self, ReportError> {
        if bytes.len() == REPORT_SIZE {
            return Self::parse(bytes);
        }
        let text: Vec<u8> = bytes
            .iter()
            .copied()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        if text.len() == 2 * REPORT_SIZE && text.iter().all(u8::is_ascii_hexdigit) {
            let raw = hex::decode(&text).map_err(|e| ReportError::Hex(e.to_string()))?;
            return Self::parse(&raw);
        }
        if !text.is_empty() && text.iter().all(u8::is_ascii_hexdigit) {
            return Err(ReportError::Size(text.len() / 2));
        }
        Err(ReportError::Size(bytes.len()))
    }

    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.raw[..SIGNED_LEN]
    }

    /// SIGNER_INFO bit 0: the author key digest is present.
    pub fn author_key_en(&self) -> bool {
        self.signer_info & 1 != 0
    }

    /// SIGNER_INFO bit 1: chip_id is masked (zero).
    pub fn mask_chip_id(&self) -> bool {
        self.signer_info & 2 != 0
    }

    /// SIGNER_INFO bits 4:2.
    pub fn signing_key(&self) -> SigningKey {
        match (self.signer_info >> 2) & 7 {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            7 => SigningKey::None,
            n => SigningKey::Reserved(n as u8),
        }
    }

    /// PLATFORM_INFO bit 0: SMT is enabled on the host.
    pub fn smt_enabled(&self) -> bool {
        self.platform_info & 1 != 0
    }

    /// The product family the report's CPUID fields name (version 3+), if any.
    pub fn cpuid_product(&self) -> Option<Product> {
        let (family, model, _) = self.cpuid?;
        Product::from_cpuid(family, model)
    }

    /// The TCB layout: Turin's when `product` (or the report's CPUID) says Turin, else Milan/Genoa.
    pub fn tcb_layout(&self, product: Option<Product>) -> TcbLayout {
        match product.or_else(|| self.cpuid_product()) {
            Some(Product::Turin) => TcbLayout::Turin,
            _ => TcbLayout::MilanGenoa,
        }
    }

    /// The reported TCB, unpacked.
    pub fn reported_tcb(&self, layout: TcbLayout) -> Tcb {
        Tcb::from_raw(self.reported_tcb, layout)
    }
}

/// AMD EPYC generations with SEV-SNP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Product {
    /// Family 19h models 00h-0Fh.
    Milan,
    /// Family 19h models 10h-1Fh and A0h-AFh.
    Genoa,
    /// Family 1Ah models 00h-11h.
    Turin,
}

impl Product {
    /// The product for a CPUID family and model, if known.
    pub fn from_cpuid(family: u8, model: u8) -> Option<Self> {
        match (family, model) {
            (0x19, 0x00..=0x0F) => Some(Product::Milan),
            (0x19, 0x10..=0x1F) | (0x19, 0xA0..=0xAF) => Some(Product::Genoa),
            (0x1A, 0x00..=0x11) => Some(Product::Turin),
            _ => None,
        }
    }

    /// Lower-case name as the command line takes it.
    pub fn name(self) -> &'static str {
        match self {
            Product::Milan => "milan",
            Product::Genoa => "genoa",
            Product::Turin => "turin",
        }
    }
}

impl std::str::FromStr for Product {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "milan" => Ok(Product::Milan),
            "genoa" => Ok(Product::Genoa),
            "turin" => Ok(Product::Turin),
            other => Err(format!(
                "unknown product {other:?} (expected milan, genoa or turin)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank(version: u32) -> Vec<u8> {
        let mut b = vec![0u8; REPORT_SIZE];
        b[..4].copy_from_slice(&version.to_le_bytes());
        b
    }

    #[test]
    fn fields_come_from_their_offsets() {
        let mut b = blank(3);
        b[0x90] = 0xAB;
        b[0xC0 + 31] = 0xCD;
        b[0x188] = 0x19;
        b[0x189] = 0x11;
        b[0x30] = 2;
        let r = SnpReport::parse(&b).unwrap();
        assert_eq!(r.measurement[0], 0xAB);
        assert_eq!(r.host_data[31], 0xCD);
        assert_eq!(r.vmpl, 2);
        assert_eq!(r.cpuid_product(), Some(Product::Genoa));
    }

    #[test]
    fn wrong_size_and_version_are_rejected() {
        assert!(matches!(
            SnpReport::parse(&[0u8; 100]),
            Err(ReportError::Size(100))
        ));
        assert!(matches!(
            SnpReport::parse(&blank(1)),
            Err(ReportError::Version(1))
        ));
        assert!(matches!(
            SnpReport::parse(&blank(6)),
            Err(ReportError::Version(6))
        ));
        for v in 2..=5 {
            assert!(SnpReport::parse(&blank(v)).is_ok());
        }
    }

    #[test]
    fn hex_text_is_accepted() {
        let text = format!("{}\n", hex::encode(blank(2)));
        assert_eq!(
            SnpReport::parse_file_contents(text.as_bytes())
                .unwrap()
                .version,
            2
        );
        assert!(matches!(
            SnpReport::parse_file_contents(b"abcd"),
            Err(ReportError::Size(2))
        ));
    }
}

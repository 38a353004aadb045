//! Binding a key to evidence: `report_data = SHA-512(nonce || public key)`.
//!
//! The relying party picks a fresh nonce; the guest generates an ephemeral key pair and asks the
//! firmware for a report whose REPORT_DATA (64 bytes, exactly a SHA-512) is this digest. A key
//! broker that verified the report and recomputed the digest from its own nonce and the key the
//! guest presented knows the key belongs to the measured guest, and wraps the secret to it.

use sha2::{Digest, Sha512};

/// Errors from a `nonce=HEX,key=HEX` specification.
#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    /// An item other than `nonce=` or `key=`, or one missing.
    #[error("report-data binding {0:?}: expected `nonce=HEX,key=HEX`")]
    Syntax(String),
    /// A value that is not hex.
    #[error("report-data binding: {0} is not hex: {1}")]
    Hex(&'static str, String),
}

/// The 64-byte REPORT_DATA binding `key` to `nonce`.
pub fn report_data_for(nonce: &[u8], key: &[u8]) -> [u8; 64] {
    let mut h = Sha512::new();
    h.update(nonce);
    h.update(key);
    h.finalize().into()
}

/// Parses `nonce=HEX,key=HEX` (either order) and returns the REPORT_DATA it implies.
pub fn report_data_from_spec(spec: &str) -> Result<[u8; 64], BindingError> {
    let mut nonce = None;
    let mut key = None;
    for item in spec.split(',') {
        let (name, value) = item
            .split_once('=')
            .ok_or_else(|| BindingError::Syntax(spec.to_string()))?;
        match name.trim() {
            "nonce" => {
                nonce = Some(
                    hex::decode(value.trim())
                        .map_err(|e| BindingError::Hex("nonce", e.to_string()))?,
                )
            }
            "key" => {
                key = Some(
                    hex::decode(value.trim())
                        .map_err(|e| BindingError::Hex("key", e.to_string()))?,
                )
            }
            _ => return Err(BindingError::Syntax(spec.to_string())),
        }
    }
    match (nonce, key) {
        (Some(n), Some(k)) => Ok(report_data_for(&n, &k)),
        _ => Err(BindingError::Syntax(spec.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_matches_direct_hash_and_order_does_not_matter() {
        let a = report_data_from_spec("nonce=0102,key=aabb").unwrap();
        let b = report_data_from_spec("key=aabb, nonce=0102").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, report_data_for(&[1, 2], &[0xaa, 0xbb]));
        assert_ne!(a, report_data_for(&[1, 3], &[0xaa, 0xbb]));
    }

    #[test]
    fn bad_specs_are_rejected() {
        assert!(report_data_from_spec("nonce=01").is_err());
        assert!(report_data_from_spec("nonce=zz,key=00").is_err());
        assert!(report_data_from_spec("salt=00,key=00").is_err());
    }
}

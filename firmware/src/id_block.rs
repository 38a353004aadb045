//! SNP ID block and ID auth block (SNP firmware ABI, `SNP_LAUNCH_FINISH`): the expected launch
//! digest and policy, signed with an ECDSA P-384 ID key, whose public half is in turn signed by
//! an optional author key. The firmware refuses to finish a launch whose digest or policy
//! differs, and reports the SHA-384 of both public keys in every attestation report.

use p384::ecdsa::signature::{Signer, Verifier};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use p384::pkcs8::DecodePrivateKey;
use sha2::{Digest, Sha384};

/// Size of the ID block.
pub const ID_BLOCK_SIZE: usize = 0x60;
/// Size of the ID auth block.
pub const ID_AUTH_SIZE: usize = 0x1000;
/// Algorithm number of ECDSA P-384 with SHA-384.
pub const ALGO_ECDSA_P384_SHA384: u32 = 1;
/// Curve number of P-384 in SNP public keys.
pub const CURVE_P384: u32 = 2;
/// Size of an SNP public-key structure.
pub const PUBKEY_SIZE: usize = 0x404;

const BLOCK_SIG: usize = 0x40;
const ID_KEY: usize = 0x240;
const ID_KEY_SIG: usize = 0x680;
const AUTHOR_KEY: usize = 0x880;

/// Why an ID block cannot be built or does not verify.
#[derive(Debug, thiserror::Error)]
pub enum IdBlockError {
    /// A key file is not an EC P-384 private key in PEM.
    #[error("{what} key: not a P-384 private key in PEM (SEC1 or PKCS#8): {reason}")]
    Key {
        /// Which key ("ID" or "author").
        what: &'static str,
        /// The parser's complaint.
        reason: String,
    },
    /// A block has the wrong length.
    #[error("{what} is {len} bytes, expected {expected}")]
    Length {
        /// Which block.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The expected length.
        expected: usize,
    },
    /// A public key in the auth block is malformed.
    #[error("{0} public key in the ID auth block is not a P-384 point")]
    PublicKey(&'static str),
    /// A signature does not verify.
    #[error("{0} signature does not verify")]
    Signature(&'static str),
}

/// What goes into an ID block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdBlockInput {
    /// The expected launch digest.
    pub measurement: [u8; 48],
    /// Family ID chosen by the owner.
    pub family_id: [u8; 16],
    /// Image ID chosen by the owner.
    pub image_id: [u8; 16],
    /// ID block version (1).
    pub version: u32,
    /// Guest security version number.
    pub guest_svn: u32,
    /// Guest policy the launch must use.
    pub policy: u64,
}

/// Parses a P-384 private key from PEM (SEC1 "EC PRIVATE KEY" or PKCS#8 "PRIVATE KEY").
pub fn signing_key_from_pem(pem: &str, what: &'static str) -> Result<SigningKey, IdBlockError> {
    if let Ok(k) = p384::SecretKey::from_sec1_pem(pem) {
        return Ok(SigningKey::from(k));
    }
    p384::SecretKey::from_pkcs8_pem(pem)
        .map(SigningKey::from)
        .map_err(|e| IdBlockError::Key {
            what,
            reason: e.to_string(),
        })
}

/// The 96-byte ID block.
pub fn id_block_bytes(input: &IdBlockInput) -> [u8; ID_BLOCK_SIZE] {
    let mut b = [0u8; ID_BLOCK_SIZE];
    b[..48].copy_from_slice(&input.measurement);
    b[0x30..0x40].copy_from_slice(&input.family_id);
    b[0x40..0x50].copy_from_slice(&input.image_id);
    b[0x50..0x54].copy_from_slice(&input.version.to_le_bytes());
    b[0x54..0x58].copy_from_slice(&input.guest_svn.to_le_bytes());
    b[0x58..0x60].copy_from_slice(&input.policy.to_le_bytes());
    b
}

/// The SNP public-key structure of `key`: curve, Qx and Qy little-endian in 72-byte fields.
pub fn public_key_bytes(key: &VerifyingKey) -> [u8; PUBKEY_SIZE] {
    let mut out = [0u8; PUBKEY_SIZE];
    out[..4].copy_from_slice(&CURVE_P384.to_le_bytes());
    let point = key.to_encoded_point(false);
    if let (Some(x), Some(y)) = (point.x(), point.y()) {
        for (i, v) in x.iter().rev().enumerate() {
            out[4 + i] = *v;
        }
        for (i, v) in y.iter().rev().enumerate() {
            out[4 + 72 + i] = *v;
        }
    }
    out
}

/// SHA-384 of a key's public-key structure, as attestation reports carry it.
pub fn key_digest(key: &VerifyingKey) -> [u8; 48] {
    Sha384::digest(public_key_bytes(key)).into()
}

fn sign(key: &SigningKey, msg: &[u8], out: &mut [u8]) {
    let sig: Signature = key.sign(msg);
    let (r, s) = sig.split_bytes();
    for (i, v) in r.iter().rev().enumerate() {
        out[i] = *v;
    }
    for (i, v) in s.iter().rev().enumerate() {
        out[72 + i] = *v;
    }
}

/// Builds the ID block and ID auth block, signed with `id_key` and, if given, `author_key`.
pub fn build(
    input: &IdBlockInput,
    id_key: &SigningKey,
    author_key: Option<&SigningKey>,
) -> ([u8; ID_BLOCK_SIZE], Box<[u8; ID_AUTH_SIZE]>) {
    let block = id_block_bytes(input);
    let mut auth = Box::new([0u8; ID_AUTH_SIZE]);
    auth[0..4].copy_from_slice(&ALGO_ECDSA_P384_SHA384.to_le_bytes());
    sign(id_key, &block, &mut auth[BLOCK_SIG..BLOCK_SIG + 0x200]);
    let id_pub = public_key_bytes(id_key.verifying_key());
    auth[ID_KEY..ID_KEY + PUBKEY_SIZE].copy_from_slice(&id_pub);
    if let Some(author) = author_key {
        auth[4..8].copy_from_slice(&ALGO_ECDSA_P384_SHA384.to_le_bytes());
        sign(author, &id_pub, &mut auth[ID_KEY_SIG..ID_KEY_SIG + 0x200]);
        auth[AUTHOR_KEY..AUTHOR_KEY + PUBKEY_SIZE]
            .copy_from_slice(&public_key_bytes(author.verifying_key()));
    }
    (block, auth)
}

fn verifying_key(bytes: &[u8], what: &'static str) -> Result<VerifyingKey, IdBlockError> {
    if bytes[..4] != CURVE_P384.to_le_bytes() {
        return Err(IdBlockError::PublicKey(what));
    }
    let mut sec1 = [0u8; 97];
    sec1[0] = 4;
    for i in 0..48 {
        sec1[1 + i] = bytes[4 + 47 - i];
        sec1[49 + i] = bytes[4 + 72 + 47 - i];
    }
    if bytes[4 + 48..4 + 72]
        .iter()
        .chain(&bytes[4 + 72 + 48..4 + 144])
        .any(|b| *b != 0)
    {
        return Err(IdBlockError::PublicKey(what));
    }
    VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| IdBlockError::PublicKey(what))
}

fn signature(bytes: &[u8], what: &'static str) -> Result<Signature, IdBlockError> {
    let mut r = [0u8; 48];
    let mut s = [0u8; 48];
    for i in 0..48 {
        r[i] = bytes[47 - i];
        s[i] = bytes[72 + 47 - i];
    }
    Signature::from_scalars(r, s).map_err(|_| IdBlockError::Signature(what))
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// SHA-384 of the ID public key.
    pub id_key_digest: [u8; 48],
    /// SHA-384 of the author public key, when the auth block has one.
    pub author_key_digest: Option<[u8; 48]>,
}

/// Checks the signatures of an ID block / ID auth block pair, as the SNP firmware does.
pub fn verify(block: &[u8], auth: &[u8]) -> Result<Verified, IdBlockError> {
    if block.len() != ID_BLOCK_SIZE {
        return Err(IdBlockError::Length {
            what: "ID block",
            len: block.len(),
            expected: ID_BLOCK_SIZE,
        });
    }
    if auth.len() != ID_AUTH_SIZE {
        return Err(IdBlockError::Length {
            what: "ID auth block",
            len: auth.len(),
            expected: ID_AUTH_SIZE,
        });
    }
    let id = verifying_key(&auth[ID_KEY..ID_KEY + PUBKEY_SIZE], "ID")?;
    id.verify(block, &signature(&auth[BLOCK_SIG..], "ID block")?)
        .map_err(|_| IdBlockError::Signature("ID block"))?;
    let author_key_digest = if auth[4..8] == ALGO_ECDSA_P384_SHA384.to_le_bytes() {
        let author = verifying_key(&auth[AUTHOR_KEY..AUTHOR_KEY + PUBKEY_SIZE], "author")?;
        author
            .verify(
                &auth[ID_KEY..ID_KEY + PUBKEY_SIZE],
                &signature(&auth[ID_KEY_SIG..], "ID key")?,
            )
            .map_err(|_| IdBlockError::Signature("ID key"))?;
        Some(key_digest(&author))
    } else {
        None
    };
    Ok(Verified {
        id_key_digest: key_digest(&id),
        author_key_digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        let mut b = [0u8; 48];
        b[47] = seed;
        b[0] = 0x11;
        SigningKey::from_slice(&b).expect("a small non-zero scalar is a valid key")
    }

    #[test]
    fn built_blocks_verify_and_tampering_is_caught() {
        let input = IdBlockInput {
            measurement: [7; 48],
            family_id: [1; 16],
            image_id: [2; 16],
            version: 1,
            guest_svn: 3,
            policy: 0x30000,
        };
        let (block, auth) = build(&input, &key(5), Some(&key(9)));
        let v = verify(&block, &auth[..]).unwrap();
        assert_eq!(v.id_key_digest, key_digest(key(5).verifying_key()));
        assert_eq!(
            v.author_key_digest,
            Some(key_digest(key(9).verifying_key()))
        );
        let mut bad = block;
        bad[0x58] ^= 1;
        assert!(matches!(
            verify(&bad, &auth[..]),
            Err(IdBlockError::Signature("ID block"))
        ));
        let mut bad_auth = auth.clone();
        bad_auth[ID_KEY_SIG + 3] ^= 1;
        assert!(verify(&block, &bad_auth[..]).is_err());
        let (block, auth) = build(&input, &key(5), None);
        assert_eq!(verify(&block, &auth[..]).unwrap().author_key_digest, None);
    }
}

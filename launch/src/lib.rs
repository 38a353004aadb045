//! Platform backends (plain, SEV-SNP, TDX), host capability probing and attestation verification.
pub mod attest;
pub mod host;

//! Platform backends (plain, SEV-SNP, TDX), host capability probing and attestation verification.
pub mod host;

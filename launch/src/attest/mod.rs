//! Attestation verification: SEV-SNP reports and TDX quotes checked against the launch the
//! relying party expects. Pure code: no KVM, no hardware, no network.
//!
//! The flow: launch plan -> expected digest (`veil measure`) -> the guest's evidence -> a
//! [`Verdict`] listing every check by name. See docs/attestation.md.

pub mod binding;
pub mod certs;
pub mod snp_report;
pub mod snp_verify;
pub mod tcb;
pub mod tdx;
#[cfg(feature = "test-signer")]
pub mod test_signer;
pub mod verdict;

pub use binding::{report_data_for, report_data_from_spec};
pub use certs::{CaChain, Cert, CertError};
pub use snp_report::{Product, ReportError, SnpReport};
pub use snp_verify::{SnpExpectations, verify_snp_report};
pub use tcb::{Tcb, TcbLayout};
pub use verdict::{Check, Status, Verdict};

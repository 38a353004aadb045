//! Intel TDX: DCAP quote parsing and verification.

mod quote;
#[cfg(feature = "test-signer")]
pub mod test_quote;
mod verify;

pub use quote::{
    ATT_KEY_ECDSA_P256, QE_REPORT_LEN, Quote, QuoteError, TD10_BODY_LEN, TD15_BODY_LEN,
    TD15_EX_BODY_LEN, TEE_TYPE_TDX, TdReport,
};
pub use verify::{INTEL_SGX_ROOT_CA_DER, TdxExpectations, verify_quote};

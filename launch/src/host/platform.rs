//! Which platform a guest runs on: plain KVM, SEV-SNP or TDX, and its command-line names.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// The platform a guest runs on: plain KVM, AMD SEV-SNP or Intel TDX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Platform {
    /// A plain (not confidential) KVM guest.
    None,
    /// An AMD SEV-SNP guest.
    SevSnp,
    /// An Intel TDX guest.
    Tdx,
}

impl Platform {
    /// Every platform, in the order `veil host-check` reports them.
    pub const ALL: [Platform; 3] = [Platform::None, Platform::SevSnp, Platform::Tdx];

    /// The name used on the command line (`none`, `sev-snp`, `tdx`).
    pub fn name(self) -> &'static str {
        match self {
            Platform::None => "none",
            Platform::SevSnp => "sev-snp",
            Platform::Tdx => "tdx",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A platform name that is not `none`, `sev-snp` or `tdx`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown platform `{0}`: expected none, sev-snp or tdx")]
pub struct UnknownPlatform(pub String);

impl FromStr for Platform {
    type Err = UnknownPlatform;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Platform::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownPlatform(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_names_are_refused() {
        for p in Platform::ALL {
            assert_eq!(p.name().parse::<Platform>(), Ok(p));
        }
        let err = "sev".parse::<Platform>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown platform `sev`: expected none, sev-snp or tdx"
        );
    }
}

//! The host CPU as `/proc/cpuinfo` describes it: vendor, model and the flags that matter to a VMM.

use serde::Serialize;

/// CPU flags a confidential VMM cares about, in the order they are reported.
const FLAGS_OF_INTEREST: [&str; 7] = [
    "svm",
    "vmx",
    "sev",
    "sev_es",
    "sev_snp",
    "tdx_host_platform",
    "hypervisor",
];

/// The host CPU's vendor, model and relevant flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CpuFacts {
    /// `vendor_id`, e.g. `AuthenticAMD` or `GenuineIntel`; empty if unreadable.
    pub vendor: String,
    /// `model name`; empty if unreadable.
    pub model: String,
    /// The flags of interest that the first CPU lists (`svm`, `vmx`, `sev`, `sev_es`,
    /// `sev_snp`, `tdx_host_platform`, `hypervisor`).
    pub flags: Vec<String>,
}

impl CpuFacts {
    /// Reads `/proc/cpuinfo`; an unreadable file gives empty facts.
    pub fn probe() -> Self {
        std::fs::read_to_string("/proc/cpuinfo")
            .map(|text| Self::parse(&text))
            .unwrap_or_default()
    }

    /// Parses the first processor block of `/proc/cpuinfo` text.
    pub fn parse(text: &str) -> Self {
        let mut facts = CpuFacts::default();
        for line in text.lines() {
            if line.trim().is_empty() {
                break; // end of the first processor's block
            }
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "vendor_id" => facts.vendor = value.to_string(),
                "model name" => facts.model = value.to_string(),
                "flags" => {
                    let present: Vec<&str> = value.split_whitespace().collect();
                    facts.flags = FLAGS_OF_INTEREST
                        .iter()
                        .filter(|f| present.contains(f))
                        .map(|f| f.to_string())
                        .collect();
                }
                _ => {}
            }
        }
        facts
    }

    /// Whether the first CPU lists `flag`.
    pub fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// True for an AMD CPU.
    pub fn is_amd(&self) -> bool {
        self.vendor == "AuthenticAMD"
    }

    /// True for an Intel CPU.
    pub fn is_intel(&self) -> bool {
        self.vendor == "GenuineIntel"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_first_block_only() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9454\n\
                    flags\t\t: fpu svm sev sev_es sev_snp lm\n\nprocessor\t: 1\nflags\t: vmx\n";
        let cpu = CpuFacts::parse(text);
        assert_eq!(cpu.vendor, "AuthenticAMD");
        assert_eq!(cpu.model, "AMD EPYC 9454");
        assert_eq!(cpu.flags, ["svm", "sev", "sev_es", "sev_snp"]);
        assert!(cpu.is_amd() && !cpu.is_intel() && !cpu.has("vmx"));
    }
}

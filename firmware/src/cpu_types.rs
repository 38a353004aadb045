//! CPU signatures (CPUID Fn0000_0001_EAX) of QEMU's EPYC models, which KVM puts in RDX at reset
//! and so into every SNP VMSA.

/// Encodes family, model and stepping as CPUID leaf 1 EAX does (AMD CPUID spec #25481).
pub const fn cpu_signature(family: u32, model: u32, stepping: u32) -> u32 {
    let (family_low, family_high) = if family > 0xf {
        (0xf, (family - 0xf) & 0xff)
    } else {
        (family, 0)
    };
    (family_high << 20)
        | (((model >> 4) & 0xf) << 16)
        | (family_low << 8)
        | ((model & 0xf) << 4)
        | (stepping & 0xf)
}

/// QEMU CPU model names and their (family, model, stepping).
const MODELS: &[(&str, u32, u32, u32)] = &[
    ("EPYC", 23, 1, 2),
    ("EPYC-v1", 23, 1, 2),
    ("EPYC-v2", 23, 1, 2),
    ("EPYC-IBPB", 23, 1, 2),
    ("EPYC-v3", 23, 1, 2),
    ("EPYC-v4", 23, 1, 2),
    ("EPYC-Rome", 23, 49, 0),
    ("EPYC-Rome-v1", 23, 49, 0),
    ("EPYC-Rome-v2", 23, 49, 0),
    ("EPYC-Rome-v3", 23, 49, 0),
    ("EPYC-Milan", 25, 1, 1),
    ("EPYC-Milan-v1", 25, 1, 1),
    ("EPYC-Milan-v2", 25, 1, 1),
    ("EPYC-Genoa", 25, 17, 0),
    ("EPYC-Genoa-v1", 25, 17, 0),
    ("EPYC-Turin", 26, 0, 0),
];

/// The signature of a QEMU CPU model by name, if known.
pub fn signature_of(name: &str) -> Option<u32> {
    MODELS
        .iter()
        .find(|m| m.0.eq_ignore_ascii_case(name))
        .map(|m| cpu_signature(m.1, m.2, m.3))
}

/// The names [`signature_of`] knows, for error messages.
pub fn known_names() -> Vec<&'static str> {
    MODELS.iter().map(|m| m.0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milan_and_genoa_signatures() {
        assert_eq!(signature_of("EPYC-Milan"), Some(0x00a0_0f11));
        assert_eq!(signature_of("EPYC-Genoa"), Some(0x00a1_0f10));
        assert_eq!(signature_of("EPYC"), Some(0x0080_0f12));
        assert_eq!(signature_of("Pentium"), None);
    }
}

//! Stable stand-in for the fuzz targets in launch/fuzz (cargo-fuzz needs nightly): a deterministic
//! stream of mutated inputs through the same parse entry points must never panic.

use std::path::PathBuf;

use veil_launch::attest::tdx::Quote;
use veil_launch::attest::{CaChain, Cert, SnpReport};

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(6) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            1 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
            2 => {
                let n = rng.below(b.len() + 1);
                b.truncate(n);
            }
            3 => b.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
            4 if b.len() > 8 => {
                // Overwrite a length-like field with an extreme value.
                let i = rng.below(b.len() - 4);
                let v = [0u32, 1, 0xFFFF, 0xFFFF_FFFF][rng.below(4)];
                b[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            _ => {
                let i = rng.below(b.len() + 1);
                b.insert(i, rng.next() as u8);
            }
        }
    }
    b
}

fn snp_testdata() -> Option<PathBuf> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    repo.ancestors()
        .map(|a| a.join("../shared/testdata/snp"))
        .find(|p| p.join("vcek_milan.der").is_file())
}

fn seeds() -> Vec<Vec<u8>> {
    let tdx = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tdx");
    let mut out: Vec<Vec<u8>> = [
        "quote_v4_td10.bin",
        "quote_v5_td15.bin",
        "quote_v5_td15ex.bin",
    ]
    .iter()
    .map(|n| std::fs::read(tdx.join(n)).unwrap())
    .collect();
    let mut snp = vec![0u8; 0x4A0];
    snp[0] = 2;
    out.push(snp);
    out.push(Vec::new());
    let snp = snp_testdata().expect("shared/testdata/snp beside the repository");
    for name in ["vcek_milan.der", "ask_ark_milan.pem", "report_milan.hex"] {
        out.push(std::fs::read(snp.join(name)).unwrap());
    }
    out
}

#[test]
fn mutated_inputs_never_panic_the_parsers() {
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let seeds = seeds();
    let mut parsed = 0;
    for _ in 0..4000 {
        let seed = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, seed);
        parsed += usize::from(Quote::parse(&input).is_ok());
        parsed += usize::from(Quote::parse_file_contents(&input).is_ok());
        parsed += usize::from(SnpReport::parse(&input).is_ok());
        parsed += usize::from(SnpReport::parse_file_contents(&input).is_ok());
        if let Ok(c) = Cert::from_bytes("VCEK", &input) {
            let _ = c.vek_extensions();
            let _ = c.p384_key();
            parsed += 1;
        }
        parsed += usize::from(CaChain::from_pem(&input, "smoke").is_ok());
        // The verifier runs on a sample of what parsed.
        if let Ok(q) = Quote::parse(&input)
            && rng.below(8) == 0
        {
            let _ = veil_launch::attest::tdx::verify_quote(&q, &Default::default());
        }
    }
    // Some mutations keep the inputs well-formed: the smoke run reaches past the first checks.
    assert!(parsed > 100, "only {parsed} inputs parsed");
}

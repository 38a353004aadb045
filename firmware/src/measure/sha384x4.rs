//! SHA-384 of four 4 KiB pages at once with AVX2, one page per 64-bit lane.
//!
//! A single SHA-384 stream is bound by the dependency chain of its rounds, so one core hashing
//! one page at a time leaves most of its vector units idle. The pages of a launch are
//! independent messages of the same length, so four of them can share every instruction:
//! each 256-bit register holds the same word of four pages. The round function is the one of
//! FIPS 180-4 (SHA-512 with the SHA-384 initial hash value, digest truncated to 48 bytes); the
//! constants below are computed from their definitions (fractional bits of the cube roots of
//! the first 80 primes, of the square roots of the 9th to 16th primes).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m256i, _mm256_add_epi64, _mm256_and_si256, _mm256_andnot_si256, _mm256_or_si256,
    _mm256_set_epi64x, _mm256_set1_epi64x, _mm256_setzero_si256, _mm256_slli_epi64,
    _mm256_srli_epi64, _mm256_storeu_si256, _mm256_xor_si256,
};

/// Bytes in a page, the only message length this module hashes.
pub const PAGE: usize = 4096;

/// SHA-512 round constants.
#[cfg(target_arch = "x86_64")]
const K: [u64; 80] = [
    0x428a2f98d728ae22,
    0x7137449123ef65cd,
    0xb5c0fbcfec4d3b2f,
    0xe9b5dba58189dbbc,
    0x3956c25bf348b538,
    0x59f111f1b605d019,
    0x923f82a4af194f9b,
    0xab1c5ed5da6d8118,
    0xd807aa98a3030242,
    0x12835b0145706fbe,
    0x243185be4ee4b28c,
    0x550c7dc3d5ffb4e2,
    0x72be5d74f27b896f,
    0x80deb1fe3b1696b1,
    0x9bdc06a725c71235,
    0xc19bf174cf692694,
    0xe49b69c19ef14ad2,
    0xefbe4786384f25e3,
    0x0fc19dc68b8cd5b5,
    0x240ca1cc77ac9c65,
    0x2de92c6f592b0275,
    0x4a7484aa6ea6e483,
    0x5cb0a9dcbd41fbd4,
    0x76f988da831153b5,
    0x983e5152ee66dfab,
    0xa831c66d2db43210,
    0xb00327c898fb213f,
    0xbf597fc7beef0ee4,
    0xc6e00bf33da88fc2,
    0xd5a79147930aa725,
    0x06ca6351e003826f,
    0x142929670a0e6e70,
    0x27b70a8546d22ffc,
    0x2e1b21385c26c926,
    0x4d2c6dfc5ac42aed,
    0x53380d139d95b3df,
    0x650a73548baf63de,
    0x766a0abb3c77b2a8,
    0x81c2c92e47edaee6,
    0x92722c851482353b,
    0xa2bfe8a14cf10364,
    0xa81a664bbc423001,
    0xc24b8b70d0f89791,
    0xc76c51a30654be30,
    0xd192e819d6ef5218,
    0xd69906245565a910,
    0xf40e35855771202a,
    0x106aa07032bbd1b8,
    0x19a4c116b8d2d0c8,
    0x1e376c085141ab53,
    0x2748774cdf8eeb99,
    0x34b0bcb5e19b48a8,
    0x391c0cb3c5c95a63,
    0x4ed8aa4ae3418acb,
    0x5b9cca4f7763e373,
    0x682e6ff3d6b2b8a3,
    0x748f82ee5defb2fc,
    0x78a5636f43172f60,
    0x84c87814a1f0ab72,
    0x8cc702081a6439ec,
    0x90befffa23631e28,
    0xa4506cebde82bde9,
    0xbef9a3f7b2c67915,
    0xc67178f2e372532b,
    0xca273eceea26619c,
    0xd186b8c721c0c207,
    0xeada7dd6cde0eb1e,
    0xf57d4f7fee6ed178,
    0x06f067aa72176fba,
    0x0a637dc5a2c898a6,
    0x113f9804bef90dae,
    0x1b710b35131c471b,
    0x28db77f523047d84,
    0x32caab7b40c72493,
    0x3c9ebe0a15c9bebc,
    0x431d67c49c100d4c,
    0x4cc5d4becb3e42b6,
    0x597f299cfc657e2a,
    0x5fcb6fab3ad6faec,
    0x6c44198c4a475817,
];

/// SHA-384 initial hash value.
#[cfg(target_arch = "x86_64")]
const IV: [u64; 8] = [
    0xcbbb9d5dc1059ed8,
    0x629a292a367cd507,
    0x9159015a3070dd17,
    0x152fecd8f70e5939,
    0x67332667ffc00b31,
    0x8eb44a8768581511,
    0xdb0c2e0d64f98fa7,
    0x47b5481dbefa4fa4,
];

/// Whether this CPU can run [`pages`] (it has AVX2).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The SHA-384 digests of four pages, or `None` when the CPU lacks AVX2.
pub fn pages(p: [&[u8; PAGE]; 4]) -> Option<[[u8; 48]; 4]> {
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: the CPU has AVX2, the only feature the function is compiled for.
        return Some(unsafe { pages_avx2(p) });
    }
    let _ = p;
    None
}

#[cfg(target_arch = "x86_64")]
macro_rules! rotr {
    ($x:expr, $n:literal) => {
        _mm256_or_si256(
            _mm256_srli_epi64::<$n>($x),
            _mm256_slli_epi64::<{ 64 - $n }>($x),
        )
    };
}

#[cfg(target_arch = "x86_64")]
macro_rules! xor3 {
    ($a:expr, $b:expr, $c:expr $(,)?) => {
        _mm256_xor_si256(_mm256_xor_si256($a, $b), $c)
    };
}

#[cfg(target_arch = "x86_64")]
macro_rules! add {
    ($a:expr, $b:expr $(,)?) => {
        _mm256_add_epi64($a, $b)
    };
}

/// One SHA-512 compression of a 128-byte block per lane; `w` holds the block's 16 words.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn compress(state: &mut [__m256i; 8], mut w: [__m256i; 16]) {
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
    for (t, k) in K.iter().enumerate() {
        let wt = if t < 16 {
            w[t]
        } else {
            let w2 = w[(t + 14) & 15];
            let w15 = w[(t + 1) & 15];
            let s1 = xor3!(rotr!(w2, 19), rotr!(w2, 61), _mm256_srli_epi64::<6>(w2));
            let s0 = xor3!(rotr!(w15, 1), rotr!(w15, 8), _mm256_srli_epi64::<7>(w15));
            let x = add!(add!(s1, w[(t + 9) & 15]), add!(s0, w[t & 15]));
            w[t & 15] = x;
            x
        };
        let big_s1 = xor3!(rotr!(e, 14), rotr!(e, 18), rotr!(e, 41));
        let ch = _mm256_xor_si256(_mm256_and_si256(e, f), _mm256_andnot_si256(e, g));
        let t1 = add!(
            add!(h, big_s1),
            add!(ch, add!(_mm256_set1_epi64x(*k as i64), wt)),
        );
        let big_s0 = xor3!(rotr!(a, 28), rotr!(a, 34), rotr!(a, 39));
        let maj = _mm256_or_si256(
            _mm256_and_si256(a, b),
            _mm256_and_si256(c, _mm256_or_si256(a, b)),
        );
        let t2 = add!(big_s0, maj);
        h = g;
        g = f;
        f = e;
        e = add!(d, t1);
        d = c;
        c = b;
        b = a;
        a = add!(t1, t2);
    }
    for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
        *s = add!(*s, v);
    }
}

/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pages_avx2(p: [&[u8; PAGE]; 4]) -> [[u8; 48]; 4] {
    let mut state = IV.map(|v| _mm256_set1_epi64x(v as i64));
    let word = |q: &[u8; PAGE], at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&q[at..at + 8]);
        u64::from_be_bytes(b) as i64
    };
    for block in 0..PAGE / 128 {
        let mut w = [_mm256_setzero_si256(); 16];
        for (t, v) in w.iter_mut().enumerate() {
            let at = block * 128 + t * 8;
            *v = _mm256_set_epi64x(
                word(p[3], at),
                word(p[2], at),
                word(p[1], at),
                word(p[0], at),
            );
        }
        // SAFETY: this function runs only on CPUs with AVX2, as `compress` requires.
        unsafe { compress(&mut state, w) };
    }
    // The padding block: 0x80, zeros, and the message length in bits (128-bit big-endian).
    let mut w = [_mm256_setzero_si256(); 16];
    w[0] = _mm256_set1_epi64x(i64::MIN);
    w[15] = _mm256_set1_epi64x((PAGE * 8) as i64);
    // SAFETY: as above.
    unsafe { compress(&mut state, w) };
    let mut out = [[0u8; 48]; 4];
    for (i, s) in state.iter().take(6).enumerate() {
        let mut lanes = [0u64; 4];
        // SAFETY: `lanes` is 32 writable bytes; the store has no alignment requirement.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), *s) };
        for (o, l) in out.iter_mut().zip(lanes) {
            o[i * 8..i * 8 + 8].copy_from_slice(&l.to_be_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha384};

    #[test]
    fn four_pages_hash_as_sha384_does() {
        if !available() {
            eprintln!("skipped: no AVX2");
            return;
        }
        let mut p = [[0u8; PAGE]; 4];
        for (n, page) in p.iter_mut().enumerate() {
            for (i, b) in page.iter_mut().enumerate() {
                *b = (i.wrapping_mul(31 + n) >> 3) as u8 ^ n as u8;
            }
        }
        p[2] = [0xff; PAGE];
        let d = pages([&p[0], &p[1], &p[2], &p[3]]).unwrap();
        for (page, got) in p.iter().zip(d) {
            assert_eq!(got[..], Sha384::digest(page)[..]);
        }
    }
}

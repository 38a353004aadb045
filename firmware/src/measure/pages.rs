//! SHA-384 of every page of an import, spread over the machine's cores: page digests are
//! independent of each other, only their chaining is sequential.

use sha2::{Digest, Sha384};

use crate::plan::{PAGE_SIZE, PageImport};

/// Imports smaller than this are hashed on the calling thread.
const PARALLEL_MIN_PAGES: u64 = 256;

/// Per-thread cache of the digests of uniform pages (every byte the same value): firmware
/// images are full of erased (0xFF) and zero pages, and checking a page is far cheaper than
/// hashing it (the check stops at the first differing byte).
struct Uniform([Option<[u8; 48]>; 256]);

impl Uniform {
    fn new() -> Self {
        Uniform([None; 256])
    }

    fn get(&mut self, byte: u8) -> [u8; 48] {
        *self.0[usize::from(byte)]
            .get_or_insert_with(|| Sha384::digest([byte; PAGE_SIZE as usize]).into())
    }
}

fn hash_page(imp: &PageImport, i: u64, zero_page: &[u8; 48], uniform: &mut Uniform) -> [u8; 48] {
    match imp.page_slice(i) {
        None => *zero_page,
        Some(s) if s.len() == PAGE_SIZE as usize => {
            if s.iter().all(|b| *b == s[0]) {
                uniform.get(s[0])
            } else {
                Sha384::digest(s).into()
            }
        }
        Some(s) => {
            let mut h = Sha384::new();
            h.update(s);
            h.update(&[0u8; PAGE_SIZE as usize][s.len()..]);
            h.finalize().into()
        }
    }
}

/// SHA-384 of the all-zero page.
pub fn zero_page_hash() -> [u8; 48] {
    Sha384::digest([0u8; PAGE_SIZE as usize]).into()
}

/// The SHA-384 of each page of `imp`, in page order.
pub fn page_hashes(imp: &PageImport, zero_page: &[u8; 48]) -> Vec<[u8; 48]> {
    let pages = imp.pages();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(16) as u64;
    if pages < PARALLEL_MIN_PAGES || threads < 2 {
        let mut u = Uniform::new();
        return (0..pages)
            .map(|i| hash_page(imp, i, zero_page, &mut u))
            .collect();
    }
    let per = pages.div_ceil(threads);
    let mut out = vec![[0u8; 48]; pages as usize];
    std::thread::scope(|s| {
        for (t, chunk) in out.chunks_mut(per as usize).enumerate() {
            let first = t as u64 * per;
            s.spawn(move || {
                let mut u = Uniform::new();
                for (k, slot) in chunk.iter_mut().enumerate() {
                    *slot = hash_page(imp, first + k as u64, zero_page, &mut u);
                }
            });
        }
    });
    out
}

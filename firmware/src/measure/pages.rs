//! SHA-384 of every page of an import, spread over the machine's cores: page digests are
//! independent of each other, only their chaining is sequential.

use std::sync::Mutex;

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

/// Pages a worker claims at a time: small enough that a worker slowed by other processes on
/// a busy machine holds up little, large enough that claiming costs nothing.
const CHUNK_PAGES: usize = 64;

/// The SHA-384 of each page of `imp`, in page order.
///
/// Workers (the calling thread and one more per extra core) claim chunks of pages in order
/// until none are left, so a core taken by another process does not leave a fixed share of
/// the work waiting.
pub fn page_hashes(imp: &PageImport, zero_page: &[u8; 48]) -> Vec<[u8; 48]> {
    let pages = imp.pages();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(16);
    if pages < PARALLEL_MIN_PAGES || threads < 2 {
        let mut u = Uniform::new();
        return (0..pages)
            .map(|i| hash_page(imp, i, zero_page, &mut u))
            .collect();
    }
    let mut out = vec![[0u8; 48]; pages as usize];
    let chunks = Mutex::new(out.chunks_mut(CHUNK_PAGES).enumerate());
    let work = || {
        let mut u = Uniform::new();
        loop {
            // A worker that panicked cannot leave the iterator half-advanced: take it anyway.
            let next = chunks.lock().unwrap_or_else(|e| e.into_inner()).next();
            let Some((c, slots)) = next else { break };
            let first = (c * CHUNK_PAGES) as u64;
            for (k, slot) in slots.iter_mut().enumerate() {
                *slot = hash_page(imp, first + k as u64, zero_page, &mut u);
            }
        }
    };
    let helpers = (threads - 1).min(pages.div_ceil(CHUNK_PAGES as u64) as usize - 1);
    std::thread::scope(|s| {
        for _ in 0..helpers {
            s.spawn(work);
        }
        work();
    });
    out
}

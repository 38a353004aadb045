//! SHA-384 of every page of an import, spread over the machine's cores and, on each core, four
//! pages at a time on AVX2 ([`super::sha384x4`]): page digests are independent of each other,
//! only their chaining is sequential. Uniform pages are looked up, not hashed.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use sha2::{Digest, Sha384};

use super::sha384x4::{self, PAGE};
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

/// Whether every byte of `s` is the same (the check stops at the first difference).
fn is_uniform(s: &[u8]) -> bool {
    s.iter().all(|b| *b == s[0])
}

fn hash_page(imp: &PageImport, i: u64, zero_page: &[u8; 48], uniform: &mut Uniform) -> [u8; 48] {
    match imp.page_slice(i) {
        None => *zero_page,
        Some(s) if s.len() == PAGE_SIZE as usize => {
            if is_uniform(s) {
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

/// The SHA-384 of pages `first..first + count` of `imp`: whole pages with mixed bytes four at
/// a time on the vector units when the CPU allows it, the others one by one.
fn hash_run(
    imp: &PageImport,
    first: u64,
    count: u64,
    zero_page: &[u8; 48],
    uniform: &mut Uniform,
) -> Vec<[u8; 48]> {
    let mut out = vec![[0u8; 48]; count as usize];
    let x4 = sha384x4::available();
    let mut batch: [(usize, &[u8; PAGE]); 4] = [(0, &[0; PAGE]); 4];
    let mut queued = 0;
    for k in 0..out.len() {
        let i = first + k as u64;
        match imp
            .page_slice(i)
            .and_then(|s| <&[u8; PAGE]>::try_from(s).ok())
        {
            Some(page) if x4 && !is_uniform(page) => {
                batch[queued] = (k, page);
                queued += 1;
                if queued == 4 {
                    let d = sha384x4::pages(batch.map(|(_, p)| p)).expect("AVX2 was detected");
                    for ((at, _), d) in batch.iter().zip(d) {
                        out[*at] = d;
                    }
                    queued = 0;
                }
            }
            _ => out[k] = hash_page(imp, i, zero_page, uniform),
        }
    }
    for (at, page) in &batch[..queued] {
        out[*at] = Sha384::digest(page).into();
    }
    out
}

/// SHA-384 of the all-zero page.
pub fn zero_page_hash() -> [u8; 48] {
    Sha384::digest([0u8; PAGE_SIZE as usize]).into()
}

/// Pages a worker claims at a time: small enough that a worker slowed by other processes on
/// a busy machine holds up little, large enough that claiming costs nothing.
const CHUNK_PAGES: u64 = 64;

/// The SHA-384 of each page of `imp`, in page order.
pub fn page_hashes(imp: &PageImport, zero_page: &[u8; 48]) -> Vec<[u8; 48]> {
    let mut out = Vec::with_capacity(imp.pages() as usize);
    for_each_page_hash(imp, zero_page, |_, h| out.push(*h));
    out
}

/// Calls `each(index, digest)` for every page of `imp`, in page order, on the calling thread.
///
/// Large imports are hashed on every core: helper threads and the calling thread claim chunks
/// of pages in order, and between chunks the calling thread hands the finished ones, in order,
/// to `each` (which chains them), so the sequential chaining overlaps the hashing. Claiming in
/// small chunks also means a core taken by another process holds up little of the work.
pub fn for_each_page_hash(
    imp: &PageImport,
    zero_page: &[u8; 48],
    mut each: impl FnMut(u64, &[u8; 48]),
) {
    let pages = imp.pages();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(16);
    if pages < PARALLEL_MIN_PAGES || threads < 2 {
        let mut u = Uniform::new();
        for (i, h) in hash_run(imp, 0, pages, zero_page, &mut u)
            .iter()
            .enumerate()
        {
            each(i as u64, h);
        }
        return;
    }
    let chunks = pages.div_ceil(CHUNK_PAGES) as usize;
    let done: Vec<OnceLock<Vec<[u8; 48]>>> = (0..chunks).map(|_| OnceLock::new()).collect();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let consumer = std::thread::current();
    // Hashes the next unclaimed chunk; false when none is left.
    let claim = |u: &mut Uniform| {
        let c = next.fetch_add(1, Ordering::Relaxed);
        if c >= chunks {
            return false;
        }
        let first = c as u64 * CHUNK_PAGES;
        let hashes = hash_run(imp, first, CHUNK_PAGES.min(pages - first), zero_page, u);
        done[c].set(hashes).expect("each chunk is claimed once");
        true
    };
    let helpers = (threads - 1).min(chunks - 1);
    std::thread::scope(|s| {
        for _ in 0..helpers {
            s.spawn(|| {
                // If hashing panicked, the consumer must not wait for the chunk forever.
                struct Flag<'a>(&'a AtomicBool, &'a std::thread::Thread);
                impl Drop for Flag<'_> {
                    fn drop(&mut self) {
                        if std::thread::panicking() {
                            self.0.store(true, Ordering::Release);
                        }
                        self.1.unpark();
                    }
                }
                let _flag = Flag(&failed, &consumer);
                let mut u = Uniform::new();
                while claim(&mut u) {
                    consumer.unpark();
                }
            });
        }
        let mut u = Uniform::new();
        let mut chained = 0;
        while chained < chunks {
            while let Some(hashes) = done.get(chained).and_then(OnceLock::get) {
                let first = chained as u64 * CHUNK_PAGES;
                for (k, h) in hashes.iter().enumerate() {
                    each(first + k as u64, h);
                }
                chained += 1;
            }
            if chained < chunks && !claim(&mut u) {
                // Everything is claimed: wait for the helper holding the next chunk.
                assert!(
                    !failed.load(Ordering::Acquire),
                    "a page-hashing thread panicked"
                );
                std::thread::park_timeout(std::time::Duration::from_millis(1));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Blob, PageData, PageKind};

    #[test]
    fn parallel_page_digests_come_in_order_and_match_one_by_one_hashing() {
        // 1,000 pages and a partial tail: random pages, erased (0xFF) and zero runs.
        let mut data: Vec<u8> = (0..1000u64 * 4096 + 100)
            .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
            .collect();
        data[100 * 4096..300 * 4096].fill(0xff);
        data[500 * 4096..520 * 4096].fill(0);
        let imp = PageImport {
            gpa: 0,
            size: 1001 * 4096,
            kind: PageKind::Normal,
            data: PageData::Bytes {
                blob: Blob::from(data.clone()),
                offset: 0,
            },
            label: "test".into(),
        };
        let zero = zero_page_hash();
        let mut seen = Vec::new();
        for_each_page_hash(&imp, &zero, |i, h| seen.push((i, *h)));
        assert_eq!(seen.len(), 1001);
        for (n, (i, h)) in seen.iter().enumerate() {
            assert_eq!(*i, n as u64);
            let mut page = [0u8; 4096];
            imp.page_into(*i, &mut page);
            assert_eq!(h[..], Sha384::digest(page)[..], "page {i}");
        }
        assert_eq!(
            page_hashes(&imp, &zero),
            seen.iter().map(|(_, h)| *h).collect::<Vec<_>>()
        );
    }
}

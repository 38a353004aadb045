//! Page-aligned staging buffers: the source pages handed to `SNP_LAUNCH_UPDATE` and
//! `KVM_TDX_INIT_MEM_REGION` (both require 4 KiB-aligned userspace addresses).

use veil_firmware::plan::{PAGE_SIZE, PageImport};

#[repr(C, align(4096))]
#[derive(Clone, Copy)]
struct Page([u8; PAGE_SIZE as usize]);

/// A zero-initialised, 4 KiB-aligned run of pages.
pub struct PageBuffer {
    pages: Vec<Page>,
}

impl std::fmt::Debug for PageBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PageBuffer({} pages)", self.pages.len())
    }
}

impl PageBuffer {
    /// `count` zero pages.
    pub fn zeroed(count: usize) -> Self {
        PageBuffer {
            pages: vec![Page([0; PAGE_SIZE as usize]); count],
        }
    }

    /// The contents of `import`, page by page (zero where its data ends).
    pub fn from_import(import: &PageImport) -> Self {
        let mut b = PageBuffer::zeroed(import.pages() as usize);
        for (i, p) in b.pages.iter_mut().enumerate() {
            if let Some(s) = import.page_slice(i as u64) {
                p.0[..s.len()].copy_from_slice(s);
            }
        }
        b
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: Page is a repr(C) byte array, so the Vec's storage is len * 4096 plain bytes.
        unsafe {
            std::slice::from_raw_parts(
                self.pages.as_ptr().cast(),
                self.pages.len() * PAGE_SIZE as usize,
            )
        }
    }

    /// The bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in as_slice, with exclusive access through &mut self.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.pages.as_mut_ptr().cast(),
                self.pages.len() * PAGE_SIZE as usize,
            )
        }
    }
}

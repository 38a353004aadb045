//! [`Blob`]: the immutable bytes behind page imports, either on the heap or a read-only
//! mapping of an input file (so a 64 MiB image is neither copied nor zero-filled first).

use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use super::mapped::Mapping;

/// Shared, immutable bytes (a whole input file, say); cloning shares them.
#[derive(Clone)]
pub struct Blob(Arc<Storage>);

enum Storage {
    Heap(Vec<u8>),
    Shared(Arc<[u8]>),
    Mapped(Mapping),
}

impl Blob {
    /// The contents of the file at `path`: a read-only mapping of it when it is a non-empty
    /// regular file (see [`super::mapped`] for what happens if the file shrinks meanwhile),
    /// otherwise read into memory. A file whose length changes while it is read is an error.
    pub fn from_file(path: &Path) -> std::io::Result<Blob> {
        let file = std::fs::File::open(path)?;
        let meta = file.metadata()?;
        if meta.is_file() {
            if let Some(m) = Mapping::map(&file, meta.len(), path)? {
                return Ok(Blob(Arc::new(Storage::Mapped(m))));
            }
        }
        read_whole(file, meta.len())
    }

    /// Whether the bytes are a mapping of a file (rather than a heap copy).
    pub fn is_mapped(&self) -> bool {
        matches!(*self.0, Storage::Mapped(_))
    }
}

/// Reads `file` (expected to be `len` bytes) into a buffer that is not zero-filled first.
fn read_whole(mut file: std::fs::File, len: u64) -> std::io::Result<Blob> {
    use std::io::Read;
    let len =
        usize::try_from(len).map_err(|_| std::io::Error::from(std::io::ErrorKind::FileTooLarge))?;
    let mut buf = Vec::new();
    buf.try_reserve_exact(len)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::OutOfMemory))?;
    file.read_to_end(&mut buf)?;
    // A regular file that changed length while being read is an error, not a short buffer;
    // pipes and devices report 0 and are read to their end.
    if len != 0 && buf.len() != len {
        return Err(std::io::Error::other(format!(
            "the file changed length while it was read ({len} bytes, then {})",
            buf.len()
        )));
    }
    Ok(Blob::from(buf))
}

impl Deref for Blob {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &*self.0 {
            Storage::Heap(v) => v,
            Storage::Shared(a) => a,
            Storage::Mapped(m) => m.bytes(),
        }
    }
}

impl AsRef<[u8]> for Blob {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl From<Vec<u8>> for Blob {
    fn from(v: Vec<u8>) -> Self {
        Blob(Arc::new(Storage::Heap(v)))
    }
}

impl From<&[u8]> for Blob {
    fn from(v: &[u8]) -> Self {
        Blob::from(v.to_vec())
    }
}

impl From<Arc<[u8]>> for Blob {
    fn from(a: Arc<[u8]>) -> Self {
        Blob(Arc::new(Storage::Shared(a)))
    }
}

impl PartialEq for Blob {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || **self == **other
    }
}

impl Eq for Blob {}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.is_mapped() {
            "mapped"
        } else {
            "in memory"
        };
        write!(f, "Blob({} bytes, {how})", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_mapped_and_reads_back_its_bytes() {
        let dir = std::env::temp_dir().join(format!("veil-blob-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("data");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let b = Blob::from_file(&p).unwrap();
        assert!(b.is_mapped());
        assert_eq!(&*b, &data[..]);
        assert_eq!(b, Blob::from(data.clone()));
        // An empty file cannot be mapped; it reads as no bytes.
        std::fs::write(&p, b"").unwrap();
        let e = Blob::from_file(&p).unwrap();
        assert!(!e.is_mapped() && e.is_empty());
        // Not a regular file: read to its end.
        let n = Blob::from_file(Path::new("/proc/self/stat")).unwrap();
        assert!(!n.is_mapped() && !n.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    const SIGBUS_CHILD: &str = "VEIL_BLOB_SIGBUS_CHILD";

    #[test]
    fn a_mapped_file_that_shrinks_ends_the_process_with_an_error_naming_it() {
        if let Ok(p) = std::env::var(SIGBUS_CHILD) {
            // The child: map the file, truncate it, then read what is no longer there.
            let b = Blob::from_file(Path::new(&p)).unwrap();
            assert!(b.is_mapped());
            let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
            f.set_len(0).unwrap();
            let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
            println!(
                "read past the end without SIGBUS: {}",
                std::hint::black_box(sum)
            );
            std::process::exit(3);
        }
        let dir = std::env::temp_dir().join(format!("veil-blob-bus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("shrinking.fd");
        std::fs::write(&p, vec![0x5au8; 64 << 10]).unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "plan::blob::tests::a_mapped_file_that_shrinks_ends_the_process_with_an_error_naming_it",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(SIGBUS_CHILD, &p)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "child: {out:?}");
        assert!(
            stderr.contains(&format!("veil: error: {} shrank", p.display())),
            "{stderr}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

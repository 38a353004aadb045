//! TDX `GetQuote`: the guest hands over a TDREPORT in a shared buffer; Veil forwards it to a
//! quote generation service (Intel's QGS, over a Unix socket) and writes the quote back.
//!
//! Guest buffer (GHCI, "TDG.VP.VMCALL<GetQuote>"): version u64 (1), status u64, in_len u32,
//! out_len u32, then the data. QGS message (DCAP `qgs_msg_lib`): a 4-byte big-endian length,
//! then a 16-byte header (major 1, minor 0, type, size, error_code) and the body: request
//! `report_size`, `id_list_size`, report; response `selected_id_size`, `quote_size`, id, quote.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use crate::sys::tdx::tdvmcall;

/// Status: the quote is in the buffer.
pub const STATUS_SUCCESS: u64 = 0;
/// Status: the service failed to produce a quote.
pub const STATUS_ERROR: u64 = 0x8000_0000_0000_0000;
/// Status: no quote service is available.
pub const STATUS_SERVICE_UNAVAILABLE: u64 = 0x8000_0000_0000_0001;
const HEADER: usize = 24;
const QGS_GET_QUOTE_REQ: u32 = 0;
const QGS_GET_QUOTE_RESP: u32 = 1;
const QGS_HEADER: usize = 16;
/// Largest response accepted from the service.
const MAX_RESPONSE: usize = 1 << 20;

/// Guest memory the handler reads the request from and writes the answer to (shared pages).
pub trait SharedMemory {
    /// Copies guest bytes at `gpa` into `buf`; `None` if the range is not guest memory.
    fn read_shared(&self, gpa: u64, buf: &mut [u8]) -> Option<()>;
    /// Copies `data` to guest memory at `gpa`; `None` if the range is not guest memory.
    fn write_shared(&self, gpa: u64, data: &[u8]) -> Option<()>;
}

impl SharedMemory for crate::kvm_vm::KvmConfidentialVm {
    fn read_shared(&self, gpa: u64, buf: &mut [u8]) -> Option<()> {
        crate::kvm_vm::KvmConfidentialVm::read_shared(self, gpa, buf)
    }
    fn write_shared(&self, gpa: u64, data: &[u8]) -> Option<()> {
        crate::kvm_vm::KvmConfidentialVm::write_shared(self, gpa, data)
    }
}

/// Why the quote service did not produce a quote.
#[derive(Debug, thiserror::Error)]
pub enum QuoteError {
    /// Talking to the socket failed.
    #[error("quote generation service {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The service answered something that is not a quote.
    #[error("quote generation service {path}: {what}")]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
}

/// A quote generation service reachable over a Unix socket.
#[derive(Debug, Clone)]
pub struct QuoteService {
    path: PathBuf,
    timeout: Duration,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl QuoteService {
    /// The service at `path` (e.g. QGS's `/var/run/tdx-qgs/qgs.socket`).
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        QuoteService {
            path: path.into(),
            timeout: Duration::from_secs(30),
        }
    }

    fn io(&self, source: std::io::Error) -> QuoteError {
        QuoteError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn protocol(&self, what: impl Into<String>) -> QuoteError {
        QuoteError::Protocol {
            path: self.path.clone(),
            what: what.into(),
        }
    }

    /// Sends `report` (a TDREPORT) and returns the quote.
    pub fn get_quote(&self, report: &[u8]) -> Result<Vec<u8>, QuoteError> {
        let mut s = UnixStream::connect(&self.path).map_err(|e| self.io(e))?;
        s.set_read_timeout(Some(self.timeout))
            .map_err(|e| self.io(e))?;
        s.set_write_timeout(Some(self.timeout))
            .map_err(|e| self.io(e))?;
        let size = (QGS_HEADER + 8 + report.len()) as u32;
        let mut msg = Vec::with_capacity(4 + size as usize);
        msg.extend_from_slice(&size.to_be_bytes());
        msg.extend_from_slice(&1u16.to_le_bytes());
        msg.extend_from_slice(&0u16.to_le_bytes());
        msg.extend_from_slice(&QGS_GET_QUOTE_REQ.to_le_bytes());
        msg.extend_from_slice(&size.to_le_bytes());
        msg.extend_from_slice(&0u32.to_le_bytes());
        msg.extend_from_slice(&(report.len() as u32).to_le_bytes());
        msg.extend_from_slice(&0u32.to_le_bytes());
        msg.extend_from_slice(report);
        s.write_all(&msg).map_err(|e| self.io(e))?;
        let mut len = [0u8; 4];
        s.read_exact(&mut len).map_err(|e| self.io(e))?;
        let len = u32::from_be_bytes(len) as usize;
        if !(QGS_HEADER + 8..=MAX_RESPONSE).contains(&len) {
            return Err(self.protocol(format!("response length {len} is out of range")));
        }
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).map_err(|e| self.io(e))?;
        let (ty, error) = (le32(&body, 4), le32(&body, 12));
        if ty != QGS_GET_QUOTE_RESP {
            return Err(self.protocol(format!("message type {ty}, expected GET_QUOTE_RESP (1)")));
        }
        if error != 0 {
            return Err(self.protocol(format!("the service reports error {error:#x}")));
        }
        let id_size = le32(&body, QGS_HEADER) as usize;
        let quote_size = le32(&body, QGS_HEADER + 4) as usize;
        let start = QGS_HEADER + 8 + id_size;
        let end = start.checked_add(quote_size).filter(|e| *e <= body.len());
        match end {
            Some(end) if quote_size > 0 => Ok(body[start..end].to_vec()),
            _ => Err(self.protocol(format!(
                "quote of {quote_size} bytes (id {id_size}) does not fit a {len}-byte response"
            ))),
        }
    }
}

/// Handles `GetQuote` for the buffer at `gpa` (`size` bytes): forwards the TDREPORT to
/// `service`, or reports "service unavailable" in the buffer when none is configured. Returns
/// the TDVMCALL status for the guest.
pub fn handle_get_quote(
    mem: &dyn SharedMemory,
    gpa: u64,
    size: u64,
    service: Option<&QuoteService>,
) -> u64 {
    if gpa % 4096 != 0 || size == 0 || size % 4096 != 0 || size > MAX_RESPONSE as u64 {
        log::warn!("TDX GetQuote: buffer {gpa:#x}+{size:#x} is not whole shared pages");
        return tdvmcall::INVALID_OPERAND;
    }
    let mut header = [0u8; HEADER];
    if mem.read_shared(gpa, &mut header).is_none() {
        log::warn!("TDX GetQuote: buffer {gpa:#x} is not guest memory");
        return tdvmcall::INVALID_OPERAND;
    }
    let in_len = le32(&header, 16) as u64;
    if in_len > size - HEADER as u64 {
        log::warn!("TDX GetQuote: in_len {in_len} exceeds the {size}-byte buffer");
        return tdvmcall::INVALID_OPERAND;
    }
    let set_status = |status: u64, out: &[u8]| {
        let mut h = header;
        h[8..16].copy_from_slice(&status.to_le_bytes());
        h[20..24].copy_from_slice(&(out.len() as u32).to_le_bytes());
        // The range was readable above; a failed write means the guest unmapped it, and the
        // guest then sees no answer, which is all that can be done.
        let _ = mem.write_shared(gpa + HEADER as u64, out);
        let _ = mem.write_shared(gpa, &h);
    };
    let Some(service) = service else {
        log::warn!(
            "TDX GetQuote: no quote generation service configured (--tdx-qgs); the guest is told \
             the service is unavailable"
        );
        set_status(STATUS_SERVICE_UNAVAILABLE, &[]);
        return tdvmcall::SUCCESS;
    };
    let mut report = vec![0u8; in_len as usize];
    if mem.read_shared(gpa + HEADER as u64, &mut report).is_none() {
        return tdvmcall::INVALID_OPERAND;
    }
    match service.get_quote(&report) {
        Ok(q) if (q.len() as u64) <= size - HEADER as u64 => set_status(STATUS_SUCCESS, &q),
        Ok(q) => {
            log::warn!(
                "TDX GetQuote: the {}-byte quote does not fit the guest's buffer",
                q.len()
            );
            set_status(STATUS_ERROR, &[]);
        }
        Err(e) => {
            log::warn!("TDX GetQuote: {e}");
            set_status(STATUS_ERROR, &[]);
        }
    }
    tdvmcall::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::os::unix::net::UnixListener;

    /// One page of guest memory at GPA 0x1000.
    struct Page(RefCell<Vec<u8>>);

    impl SharedMemory for Page {
        fn read_shared(&self, gpa: u64, buf: &mut [u8]) -> Option<()> {
            let off = gpa.checked_sub(0x1000)? as usize;
            buf.copy_from_slice(self.0.borrow().get(off..off + buf.len())?);
            Some(())
        }
        fn write_shared(&self, gpa: u64, data: &[u8]) -> Option<()> {
            let off = gpa.checked_sub(0x1000)? as usize;
            self.0
                .borrow_mut()
                .get_mut(off..off + data.len())?
                .copy_from_slice(data);
            Some(())
        }
    }

    fn guest_request(report: &[u8]) -> Page {
        let mut p = vec![0u8; 4096];
        p[0..8].copy_from_slice(&1u64.to_le_bytes());
        p[16..20].copy_from_slice(&(report.len() as u32).to_le_bytes());
        p[24..24 + report.len()].copy_from_slice(report);
        Page(RefCell::new(p))
    }

    fn status(p: &Page) -> (u64, u32) {
        let b = p.0.borrow();
        (
            u64::from_le_bytes(b[8..16].try_into().unwrap()),
            le32(&b, 20),
        )
    }

    #[test]
    fn without_a_service_the_guest_is_told_it_is_unavailable() {
        let page = guest_request(&[7u8; 1024]);
        assert_eq!(
            handle_get_quote(&page, 0x1000, 4096, None),
            tdvmcall::SUCCESS
        );
        assert_eq!(status(&page), (STATUS_SERVICE_UNAVAILABLE, 0));
        assert_eq!(
            handle_get_quote(&page, 0x1001, 4096, None),
            tdvmcall::INVALID_OPERAND
        );
    }

    #[test]
    fn the_report_goes_to_the_service_and_the_quote_comes_back() {
        let dir = std::env::temp_dir().join(format!("veil-qgs-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("qgs.socket");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut len = [0u8; 4];
            s.read_exact(&mut len).unwrap();
            let mut req = vec![0u8; u32::from_be_bytes(len) as usize];
            s.read_exact(&mut req).unwrap();
            let report_size = le32(&req, 16) as usize;
            let report = req[24..24 + report_size].to_vec();
            // Answer: header (type 1, no error), no id, a "quote" derived from the report.
            let quote: Vec<u8> = report.iter().map(|b| b ^ 0xff).take(600).collect();
            let size = (16 + 8 + quote.len()) as u32;
            let mut resp = size.to_be_bytes().to_vec();
            for v in [1u16, 0] {
                resp.extend_from_slice(&v.to_le_bytes());
            }
            for v in [1u32, size, 0, 0, quote.len() as u32] {
                resp.extend_from_slice(&v.to_le_bytes());
            }
            resp.extend_from_slice(&quote);
            s.write_all(&resp).unwrap();
            (le32(&req, 4), report_size)
        });
        let page = guest_request(&[0x5a; 1024]);
        let service = QuoteService::unix(&path);
        assert_eq!(
            handle_get_quote(&page, 0x1000, 4096, Some(&service)),
            tdvmcall::SUCCESS
        );
        assert_eq!(server.join().unwrap(), (QGS_GET_QUOTE_REQ, 1024));
        assert_eq!(status(&page), (STATUS_SUCCESS, 600));
        assert!(page.0.borrow()[24..624].iter().all(|b| *b == 0xa5));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unreachable_service_is_an_error_in_the_buffer() {
        let page = guest_request(&[1u8; 1024]);
        let service = QuoteService::unix("/nonexistent/veil-qgs.socket");
        assert_eq!(
            handle_get_quote(&page, 0x1000, 4096, Some(&service)),
            tdvmcall::SUCCESS
        );
        assert_eq!(status(&page).0, STATUS_ERROR);
    }
}

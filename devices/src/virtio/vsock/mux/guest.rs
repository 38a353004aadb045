//! What the multiplexer does with each packet the guest sends.

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use log::{info, warn};
use vm_memory::GuestMemoryMmap;

use super::super::conn::{CONN_BUF, Conn, ConnState};
use super::super::packet::{
    HDR_LEN, HOST_CID, Header, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM, op,
};
use super::{MAX_CONNS, MAX_PKT_PAYLOAD, Mux, NAME};
use crate::virtio::chain::Chain;
use crate::virtio::iov::read_bytes;

impl Mux {
    /// Handles one packet the guest sent (in `chain`).
    pub fn handle_tx(&mut self, mem: &GuestMemoryMmap<()>, chain: &Chain) {
        if chain.readable_len() < HDR_LEN as u64 {
            if self.bad.allow() {
                warn!(
                    "{NAME}: guest sent a {}-byte packet, shorter than the header",
                    chain.readable_len()
                );
            }
            self.metrics.add(&self.metrics.bad_packets, 1);
            return;
        }
        let mut hb = [0u8; HDR_LEN];
        if read_bytes(mem, chain.readable(), 0, &mut hb).is_err() {
            return;
        }
        let h = Header::from_bytes(&hb);
        let payload = chain.readable_len() - HDR_LEN as u64;
        if h.src_cid != self.cid || h.dst_cid != HOST_CID {
            if self.bad.allow() {
                warn!(
                    "{NAME}: guest sent a packet from CID {} to CID {} (guest is {}, host is {HOST_CID}); dropped",
                    h.src_cid, h.dst_cid, self.cid
                );
            }
            self.metrics.add(&self.metrics.bad_packets, 1);
            return;
        }
        if h.kind != TYPE_STREAM || u64::from(h.len) > payload || h.len > MAX_PKT_PAYLOAD {
            if self.bad.allow() {
                warn!(
                    "{NAME}: guest packet of type {} with length {} ({payload} bytes present); reset",
                    h.kind, h.len
                );
            }
            self.metrics.add(&self.metrics.bad_packets, 1);
            if h.op != op::RST {
                self.queue_rst_to(h.dst_port, h.src_port);
            }
            return;
        }
        let key = (h.dst_port, h.src_port);
        let slot = self.index.get(&key).copied();
        if let Some(c) = slot.and_then(|s| self.conns[s].as_mut()) {
            c.peer_buf_alloc = h.buf_alloc;
            c.peer_fwd_cnt = h.fwd_cnt;
        }
        match (h.op, slot) {
            (op::REQUEST, None) => self.guest_connect(&h),
            (op::RESPONSE, Some(s)) => self.guest_accepted(s),
            (op::RW, Some(s)) => self.guest_data(mem, chain, s, h.len),
            (op::CREDIT_UPDATE, Some(_)) => {}
            (op::CREDIT_REQUEST, Some(s)) => self.queue_ctl(s, op::CREDIT_UPDATE, 0),
            (op::SHUTDOWN, Some(s)) => self.guest_shutdown(s, h.flags),
            (op::RST, Some(s)) => self.close(s),
            (op::RST, None) => {}
            (other, _) => {
                if self.bad.allow() {
                    warn!(
                        "{NAME}: guest sent op {other} for {}:{} -> host:{} in the wrong state; reset",
                        self.cid, h.src_port, h.dst_port
                    );
                }
                match slot {
                    Some(s) => self.close_with_rst(s),
                    None => self.queue_rst_to(h.dst_port, h.src_port),
                }
            }
        }
    }

    fn guest_connect(&mut self, h: &Header) {
        if self.open_conns() >= MAX_CONNS {
            if self.bad.allow() {
                warn!("{NAME}: guest opened more than {MAX_CONNS} connections; refused");
            }
            self.queue_rst_to(h.dst_port, h.src_port);
            return;
        }
        let path = PathBuf::from(format!("{}_{}", self.uds.display(), h.dst_port));
        match UnixStream::connect(&path).and_then(|s| s.set_nonblocking(true).map(|()| s)) {
            Ok(stream) => {
                let mut c = Conn::new(stream, ConnState::Connected, h.dst_port, h.src_port);
                c.peer_buf_alloc = h.buf_alloc;
                c.peer_fwd_cnt = h.fwd_cnt;
                let slot = self.insert(c);
                self.queue_ctl(slot, op::RESPONSE, 0);
            }
            Err(e) => {
                info!(
                    "{NAME}: guest connection to host port {} ({}): {e}; refused",
                    h.dst_port,
                    path.display()
                );
                self.queue_rst_to(h.dst_port, h.src_port);
            }
        }
    }

    fn guest_accepted(&mut self, slot: usize) {
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return;
        };
        if c.state != ConnState::Requested {
            self.close_with_rst(slot);
            return;
        }
        c.state = ConnState::Connected;
        let msg = format!("OK {}\n", c.local_port);
        if let Err(e) = c.stream.write_all(msg.as_bytes()) {
            warn!(
                "{NAME}: telling the host client about port {}: {e}",
                c.local_port
            );
            self.close_with_rst(slot);
            return;
        }
        self.dirty.push(slot);
    }

    fn guest_data(&mut self, mem: &GuestMemoryMmap<()>, chain: &Chain, slot: usize, len: u32) {
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return;
        };
        if c.state != ConnState::Connected {
            self.close_with_rst(slot);
            return;
        }
        if len > CONN_BUF - c.buffered().min(CONN_BUF) {
            if self.bad.allow() {
                warn!(
                    "{NAME}: guest sent {len} bytes on port {} beyond its credit; reset",
                    c.local_port
                );
            }
            self.metrics.add(&self.metrics.bad_packets, 1);
            self.close_with_rst(slot);
            return;
        }
        c.rx_cnt = c.rx_cnt.wrapping_add(len);
        self.metrics.add(&self.metrics.tx_bytes, u64::from(len));
        let mut written = 0usize;
        if c.pending_out.is_empty() && len > 0 {
            // Straight from guest memory to the host socket.
            self.iov.clear();
            if self
                .iov
                .push_range(mem, chain.readable(), HDR_LEN as u64, u64::from(len))
                .is_ok()
            {
                let list = self.iov.as_slice();
                // SAFETY: the iovecs describe mapped guest memory of the stated lengths.
                let n = unsafe {
                    libc::writev(
                        c.stream.as_raw_fd(),
                        list.as_ptr(),
                        list.len() as libc::c_int,
                    )
                };
                if n > 0 {
                    written = n as usize;
                } else if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::WouldBlock {
                        self.iov.clear();
                        warn!("{NAME}: writing to host port {}: {e}", c.local_port);
                        self.close_with_rst(slot);
                        return;
                    }
                }
            }
            self.iov.clear();
            c.fwd_cnt = c.fwd_cnt.wrapping_add(written as u32);
        }
        let rest = len as usize - written;
        if rest > 0 {
            let buf = &mut self.scratch[..rest];
            if read_bytes(mem, chain.readable(), (HDR_LEN + written) as u64, buf).is_ok() {
                c.pending_out.extend(buf.iter());
            }
            self.dirty.push(slot);
        }
        if c.wants_credit_update() {
            self.queue_ctl(slot, op::CREDIT_UPDATE, 0);
        }
    }

    fn guest_shutdown(&mut self, slot: usize, flags: u32) {
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return;
        };
        if flags & SHUTDOWN_SEND != 0 {
            let _ = c.flush_pending();
            let _ = c.stream.shutdown(std::net::Shutdown::Write);
        }
        if flags & (SHUTDOWN_SEND | SHUTDOWN_RCV) == (SHUTDOWN_SEND | SHUTDOWN_RCV) {
            self.close_with_rst(slot);
        }
    }
}

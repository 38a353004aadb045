//! The connection multiplexer between guest stream sockets and host Unix sockets, speaking the
//! protocol Firecracker users know: a host client connects to the device's socket and writes
//! `CONNECT <port>\n`, and reads `OK <hostport>\n` once the guest accepted; a guest connecting to
//! host port P reaches the Unix socket `<path>_P`.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;

use log::warn;

use super::VsockMetrics;
use super::conn::{CONN_BUF, Conn, ConnState};
use super::packet::{HOST_CID, Header, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM, op};
use crate::virtio::iov::IoVecs;
use crate::virtio::queue::LogLimiter;

mod guest;

pub(super) const NAME: &str = "virtio-vsock";
/// The most payload the device puts in one packet.
pub const MAX_PKT_PAYLOAD: u32 = 64 * 1024;
/// The most connections at once; more are refused (guest) or closed (host).
pub const MAX_CONNS: usize = 1024;
/// Header-only packets that may wait for receive buffers before the device stops reading the
/// guest's transmit queue (so a guest that never posts receive buffers cannot grow it forever).
pub const MAX_CONTROL: usize = 1024;
/// First port handed to host-initiated connections.
const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// The multiplexer's state (everything but the queues).
#[derive(Debug)]
pub struct Mux {
    cid: u64,
    uds: PathBuf,
    pub(super) listener: UnixListener,
    pub(super) conns: Vec<Option<Conn>>,
    index: HashMap<(u32, u32), usize>,
    /// Header-only packets waiting for a receive buffer.
    pub(super) control: VecDeque<Header>,
    /// Connections whose host side has data for the guest.
    pub(super) ready: VecDeque<usize>,
    /// Connections whose epoll interest must be recomputed.
    pub(super) dirty: Vec<usize>,
    /// Closed connections whose fd must leave epoll before it is dropped.
    pub(super) to_close: Vec<Conn>,
    next_port: u32,
    iov: IoVecs,
    scratch: Vec<u8>,
    metrics: Arc<VsockMetrics>,
    bad: LogLimiter,
}

impl Mux {
    /// A multiplexer for guest `cid` with host sockets at `uds`.
    pub fn new(cid: u64, uds: PathBuf, listener: UnixListener, metrics: Arc<VsockMetrics>) -> Self {
        Self {
            cid,
            uds,
            listener,
            conns: Vec::new(),
            index: HashMap::new(),
            control: VecDeque::with_capacity(64),
            ready: VecDeque::with_capacity(64),
            dirty: Vec::with_capacity(64),
            to_close: Vec::new(),
            next_port: FIRST_LOCAL_PORT,
            iov: IoVecs::with_capacity(64),
            scratch: vec![0; MAX_PKT_PAYLOAD as usize],
            metrics,
            bad: LogLimiter::default(),
        }
    }

    fn header(&self, c: &Conn, op: u16, len: u32, flags: u32) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: self.cid,
            src_port: c.local_port,
            dst_port: c.peer_port,
            len,
            kind: TYPE_STREAM,
            op,
            flags,
            buf_alloc: CONN_BUF,
            fwd_cnt: c.fwd_cnt,
        }
    }

    fn queue_ctl(&mut self, slot: usize, op: u16, flags: u32) {
        if let Some(Some(c)) = self.conns.get_mut(slot) {
            c.fwd_cnt_sent = c.fwd_cnt;
        }
        if let Some(Some(c)) = self.conns.get(slot) {
            let h = self.header(c, op, 0, flags);
            self.control.push_back(h);
        }
    }

    fn queue_rst_to(&mut self, local_port: u32, peer_port: u32) {
        self.metrics.add_rst();
        self.control.push_back(Header {
            src_cid: HOST_CID,
            dst_cid: self.cid,
            src_port: local_port,
            dst_port: peer_port,
            len: 0,
            kind: TYPE_STREAM,
            op: op::RST,
            flags: 0,
            buf_alloc: 0,
            fwd_cnt: 0,
        });
    }

    fn insert(&mut self, conn: Conn) -> usize {
        let slot = match self.conns.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        if conn.state != ConnState::AwaitingConnectLine {
            self.index.insert((conn.local_port, conn.peer_port), slot);
        }
        self.conns[slot] = Some(conn);
        self.dirty.push(slot);
        self.metrics.add(&self.metrics.conns_opened, 1);
        slot
    }

    /// Closes the connection in `slot` (its fd leaves epoll in the event handler).
    pub(super) fn close(&mut self, slot: usize) {
        if let Some(c) = self.conns.get_mut(slot).and_then(Option::take) {
            self.index.remove(&(c.local_port, c.peer_port));
            self.ready.retain(|&s| s != slot);
            self.metrics.add(&self.metrics.conns_closed, 1);
            self.to_close.push(c);
        }
    }

    fn close_with_rst(&mut self, slot: usize) {
        if let Some(Some(c)) = self.conns.get(slot) {
            let (l, p) = (c.local_port, c.peer_port);
            self.queue_rst_to(l, p);
        }
        self.close(slot);
    }

    /// Connections open now.
    pub fn open_conns(&self) -> usize {
        self.conns.iter().filter(|c| c.is_some()).count()
    }

    /// Whether the device should stop taking guest packets until the guest takes some.
    pub fn control_full(&self) -> bool {
        self.control.len() >= MAX_CONTROL
    }

    /// Accepts host clients waiting on the listener.
    pub fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) if self.open_conns() >= MAX_CONNS => {
                    warn!("{NAME}: more than {MAX_CONNS} connections; host client refused");
                    drop(stream);
                }
                Ok((stream, _)) => {
                    if let Err(e) = stream.set_nonblocking(true) {
                        warn!("{NAME}: {e}");
                        continue;
                    }
                    self.insert(Conn::new(stream, ConnState::AwaitingConnectLine, 0, 0));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    warn!("{NAME}: accepting on {}: {e}", self.uds.display());
                    return;
                }
            }
        }
    }

    fn alloc_port(&mut self) -> u32 {
        loop {
            let p = self.next_port;
            self.next_port = self.next_port.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            if !self.index.keys().any(|&(l, _)| l == p) {
                return p;
            }
        }
    }

    /// The host side of `slot` is readable (or writable).
    pub fn conn_event(&mut self, slot: usize, readable: bool, writable: bool) {
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return;
        };
        if writable {
            if let Err(e) = c.flush_pending() {
                warn!("{NAME}: writing to host port {}: {e}", c.local_port);
                self.close_with_rst(slot);
                return;
            }
            if c.wants_credit_update() {
                self.queue_ctl(slot, op::CREDIT_UPDATE, 0);
            }
            self.dirty.push(slot);
        }
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return;
        };
        if !readable {
            return;
        }
        match c.state {
            ConnState::AwaitingConnectLine => self.read_connect_line(slot),
            ConnState::Connected => {
                if !c.readable {
                    c.readable = true;
                    self.ready.push_back(slot);
                }
                self.dirty.push(slot);
            }
            _ => self.dirty.push(slot),
        }
    }

    fn read_connect_line(&mut self, slot: usize) {
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return;
        };
        let mut b = [0u8; 1];
        loop {
            match c.stream.read(&mut b) {
                Ok(0) => {
                    self.close(slot);
                    return;
                }
                Ok(_) if b[0] == b'\n' => break,
                Ok(_) if c.line.len() < 32 => c.line.push(b[0]),
                Ok(_) => {
                    warn!("{NAME}: host client sent an over-long CONNECT line; closed");
                    self.close(slot);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close(slot);
                    return;
                }
            }
        }
        let line = String::from_utf8_lossy(&c.line).into_owned();
        let port = line
            .strip_prefix("CONNECT ")
            .and_then(|p| p.trim().parse::<u32>().ok());
        let Some(port) = port else {
            warn!("{NAME}: host client sent {line:?}, expected \"CONNECT <port>\"; closed");
            self.close(slot);
            return;
        };
        let local = self.alloc_port();
        if let Some(Some(c)) = self.conns.get_mut(slot) {
            c.local_port = local;
            c.peer_port = port;
            c.state = ConnState::Requested;
            c.line = Vec::new();
        }
        self.index.insert((local, port), slot);
        self.queue_ctl(slot, op::REQUEST, 0);
        self.dirty.push(slot);
    }

    /// The next header-only packet for the guest.
    pub fn next_control(&self) -> Option<&Header> {
        self.control.front()
    }

    /// A connection with host data for the guest and credit to send it: (slot, credit).
    pub fn next_ready(&mut self) -> Option<(usize, u32)> {
        for _ in 0..self.ready.len() {
            let slot = *self.ready.front()?;
            match self.conns.get(slot).and_then(Option::as_ref) {
                Some(c) if c.state == ConnState::Connected && c.peer_credit() > 0 => {
                    return Some((slot, c.peer_credit().min(MAX_PKT_PAYLOAD)));
                }
                Some(_) => self.ready.rotate_left(1),
                None => {
                    self.ready.pop_front();
                }
            }
        }
        None
    }

    /// Builds the RW header for `n` bytes sent on `slot` and accounts for them.
    pub fn data_sent(&mut self, slot: usize, n: u32) -> Option<Header> {
        let c = self.conns.get_mut(slot)?.as_mut()?;
        c.tx_cnt = c.tx_cnt.wrapping_add(n);
        c.fwd_cnt_sent = c.fwd_cnt;
        self.metrics.add(&self.metrics.rx_bytes, u64::from(n));
        let c = self.conns.get(slot)?.as_ref()?;
        let h = self.header(c, op::RW, n, 0);
        // Round-robin between connections.
        self.ready.rotate_left(1);
        Some(h)
    }

    /// The host side of `slot` has nothing more for now.
    pub fn drained(&mut self, slot: usize) {
        if let Some(Some(c)) = self.conns.get_mut(slot) {
            c.readable = false;
        }
        self.ready.retain(|&s| s != slot);
        self.dirty.push(slot);
    }

    /// The host closed its side of `slot`: tell the guest, wait for its RST.
    pub fn host_closed(&mut self, slot: usize) {
        self.drained(slot);
        if let Some(Some(c)) = self.conns.get_mut(slot) {
            c.state = ConnState::Closing;
        }
        self.queue_ctl(slot, op::SHUTDOWN, SHUTDOWN_RCV | SHUTDOWN_SEND);
    }

    /// The connection in `slot`.
    pub fn conn(&self, slot: usize) -> Option<&Conn> {
        self.conns.get(slot)?.as_ref()
    }
}

//! One connection between a guest stream socket and a host Unix stream, with credit accounting.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;

/// How far a connection got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// A host client connected to the listener; waiting for its `CONNECT <port>\n` line.
    AwaitingConnectLine,
    /// REQUEST sent to the guest; waiting for RESPONSE or RST.
    Requested,
    /// Data flows both ways.
    Connected,
    /// SHUTDOWN sent to the guest after the host side closed; waiting for its RST.
    Closing,
}

/// Bytes of guest data the device buffers per connection (advertised as buf_alloc).
pub const CONN_BUF: u32 = 256 * 1024;

/// A connection.
#[derive(Debug)]
pub struct Conn {
    /// The host side.
    pub stream: UnixStream,
    /// State.
    pub state: ConnState,
    /// Port on the host side (CID 2).
    pub local_port: u32,
    /// Port on the guest side.
    pub peer_port: u32,
    /// The guest's receive buffer size.
    pub peer_buf_alloc: u32,
    /// Bytes the guest has consumed.
    pub peer_fwd_cnt: u32,
    /// Bytes sent to the guest.
    pub tx_cnt: u32,
    /// Bytes received from the guest.
    pub rx_cnt: u32,
    /// Bytes of guest data written to the host stream.
    pub fwd_cnt: u32,
    /// fwd_cnt as last told to the guest.
    pub fwd_cnt_sent: u32,
    /// Guest data the host stream did not accept yet (bounded by CONN_BUF through credit).
    pub pending_out: VecDeque<u8>,
    /// The partial `CONNECT` line.
    pub line: Vec<u8>,
    /// Whether the stream is registered for reading.
    pub armed_in: bool,
    /// Whether the stream is registered for writing (pending_out not empty).
    pub armed_out: bool,
    /// Whether the stream has (or may have) data for the guest.
    pub readable: bool,
}

impl Conn {
    /// A connection over `stream`.
    pub fn new(stream: UnixStream, state: ConnState, local_port: u32, peer_port: u32) -> Self {
        Self {
            stream,
            state,
            local_port,
            peer_port,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            tx_cnt: 0,
            rx_cnt: 0,
            fwd_cnt: 0,
            fwd_cnt_sent: 0,
            pending_out: VecDeque::new(),
            line: Vec::new(),
            armed_in: false,
            armed_out: false,
            readable: false,
        }
    }

    /// Bytes the guest can still take (its credit to us).
    pub fn peer_credit(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Bytes of guest data buffered here.
    pub fn buffered(&self) -> u32 {
        self.rx_cnt.wrapping_sub(self.fwd_cnt)
    }

    /// Whether the guest should be told about freed buffer space.
    pub fn wants_credit_update(&self) -> bool {
        self.fwd_cnt.wrapping_sub(self.fwd_cnt_sent) >= CONN_BUF / 4
    }

    /// Writes as much of `pending_out` to the host as it takes.
    pub fn flush_pending(&mut self) -> io::Result<()> {
        while !self.pending_out.is_empty() {
            let (a, _) = self.pending_out.as_slices();
            match self.stream.write(a) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    self.pending_out.drain(..n);
                    self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

//! The console device and its worker.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use log::{error, warn};

use crate::virtio::chain::Chain;
use crate::virtio::device::{
    ActivateError, ActivateParams, DeviceHealth, VirtioDevice, exact_queues,
};
use crate::virtio::features::{EVENT_IDX, INDIRECT_DESC, bit};
use crate::virtio::iov::{IoVecs, read_bytes};
use crate::virtio::queue::{DeviceQueue, Popped};
use crate::virtio::worker::{self, Worker};
use crate::virtio::{GuestMem, VirtioInterrupt, device_type};

const NAME: &str = "virtio-console";
const QUEUE_SIZES: [u16; 2] = [64, 64];
const MAX_SEGMENTS: usize = 64;
/// The most output bytes taken from one transmit buffer.
const MAX_TX: u64 = 64 * 1024;

/// Where guest output goes (shared with the serial port).
pub type ConsoleSink = Arc<Mutex<dyn Write + Send>>;

/// Counters for the console.
#[derive(Debug, Default)]
pub struct ConsoleMetrics {
    /// Bytes the guest wrote.
    pub tx_bytes: AtomicU64,
    /// Bytes given to the guest.
    pub rx_bytes: AtomicU64,
}

fn set_nonblocking(fd: &OwnedFd) {
    let raw = fd.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own; no memory is passed.
    let ok = unsafe {
        let flags = libc::fcntl(raw, libc::F_GETFL);
        flags >= 0 && libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) >= 0
    };
    if !ok {
        warn!(
            "{NAME}: could not make the input non-blocking: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The console device.
pub struct Console {
    sink: ConsoleSink,
    input: Option<OwnedFd>,
    worker: Option<Worker<ConsoleWorker>>,
    metrics: Arc<ConsoleMetrics>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("input", &self.input)
            .finish_non_exhaustive()
    }
}

impl Console {
    /// A console writing to `sink` and, if given, reading guest input from `input` (which is
    /// switched to non-blocking mode).
    pub fn new(sink: ConsoleSink, input: Option<OwnedFd>) -> Self {
        if let Some(fd) = &input {
            set_nonblocking(fd);
        }
        Self {
            sink,
            input,
            worker: None,
            metrics: Arc::new(ConsoleMetrics::default()),
        }
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<ConsoleMetrics> {
        &self.metrics
    }
}

/// Serves the console's receive and transmit queues.
pub struct ConsoleWorker {
    mem: GuestMem,
    pub(super) rx: DeviceQueue,
    pub(super) tx: DeviceQueue,
    chain: Chain,
    iov: IoVecs,
    buf: Vec<u8>,
    sink: ConsoleSink,
    pub(super) input: Option<OwnedFd>,
    /// Whether the input fd is registered (it is not while the guest has no rx buffers).
    pub(super) input_armed: bool,
    /// The input reached its end: unregister and drop it (see `arm_input`).
    pub(super) input_ended: bool,
    interrupt: Arc<dyn VirtioInterrupt>,
    health: Arc<DeviceHealth>,
    metrics: Arc<ConsoleMetrics>,
}

impl std::fmt::Debug for ConsoleWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleWorker")
            .field("rx", &self.rx)
            .field("tx", &self.tx)
            .finish_non_exhaustive()
    }
}

impl ConsoleWorker {
    /// A worker for `params`, which must hold both queues.
    pub fn new(
        params: ActivateParams,
        sink: ConsoleSink,
        input: Option<OwnedFd>,
        metrics: Arc<ConsoleMetrics>,
    ) -> Result<Self, ActivateError> {
        let ActivateParams {
            mem,
            queues,
            interrupt,
            health,
            features,
        } = params;
        let [rx, tx] = exact_queues(NAME, queues)?;
        Ok(Self {
            mem,
            rx: DeviceQueue::new(NAME, rx, features, MAX_SEGMENTS),
            tx: DeviceQueue::new(NAME, tx, features, MAX_SEGMENTS),
            chain: Chain::with_capacity(MAX_SEGMENTS),
            iov: IoVecs::with_capacity(MAX_SEGMENTS),
            buf: vec![0; MAX_TX as usize],
            sink,
            input,
            input_armed: false,
            input_ended: false,
            interrupt,
            health,
            metrics,
        })
    }

    /// Writes everything the guest transmitted to the sink.
    pub fn process_tx(&mut self) -> usize {
        let Self {
            mem,
            tx,
            chain,
            buf,
            sink,
            interrupt,
            health,
            metrics,
            ..
        } = self;
        let mut out = sink.lock().unwrap_or_else(|p| p.into_inner());
        let n = tx.drain(mem, chain, interrupt, health, |chain| {
            let len = chain.readable_len().min(MAX_TX) as usize;
            if read_bytes(&**mem, chain.readable(), 0, &mut buf[..len]).is_ok() {
                if let Err(e) = out.write_all(&buf[..len]) {
                    error!("{NAME}: writing guest output: {e}");
                }
                metrics.tx_bytes.fetch_add(len as u64, Ordering::Relaxed);
            }
            0
        });
        let _ = out.flush();
        n
    }

    /// Moves available input into the guest's receive buffers. Returns false when the guest has
    /// no buffer left (the caller then stops polling the input: backpressure, nothing dropped).
    pub fn process_input(&mut self) -> bool {
        let Some(fd) = self.input.as_ref().map(|f| f.as_raw_fd()) else {
            return false;
        };
        if self.input_ended {
            return false;
        }
        let mut delivered = false;
        let mut has_room = true;
        loop {
            let head = match self.rx.pop(&self.mem, &mut self.chain) {
                Ok(Popped::Chain) => self.chain.head(),
                Ok(Popped::Bad(head, _)) => {
                    if let Err(e) = self.rx.complete(&self.mem, head, 0) {
                        self.rx.fail(&e, &self.health, self.interrupt.as_ref());
                        return false;
                    }
                    continue;
                }
                Ok(Popped::Empty) => {
                    has_room = false;
                    break;
                }
                Err(_) => return false,
            };
            self.iov.clear();
            let want = self.chain.writable_len();
            let n = match self
                .iov
                .push_range(&self.mem, self.chain.writable(), 0, want)
            {
                Ok(()) => {
                    let list = self.iov.as_slice();
                    // SAFETY: the iovecs point into mapped guest memory of the stated lengths.
                    unsafe { libc::readv(fd, list.as_ptr(), list.len() as libc::c_int) }
                }
                Err(e) => {
                    warn!("{NAME}: receive buffer: {e}");
                    0
                }
            };
            self.iov.clear();
            if n < 0 || (n == 0 && want > 0) {
                // Nothing to read (EAGAIN) or an error: give the buffer back for later. At the
                // end of input (0 bytes into a non-empty buffer) the buffer goes back too and
                // the input is dropped: the guest sees nothing of it.
                self.undo_pop();
                if n == 0 {
                    self.input_ended = true;
                }
                break;
            }
            if let Err(e) = self.rx.complete(&self.mem, head, n as u32) {
                self.rx.fail(&e, &self.health, self.interrupt.as_ref());
                return false;
            }
            delivered = true;
            self.metrics.rx_bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
        if delivered {
            if let Err(e) = self.rx.signal_used(&self.mem, self.interrupt.as_ref()) {
                self.rx.fail(&e, &self.health, self.interrupt.as_ref());
            }
        }
        has_room
    }

    fn undo_pop(&mut self) {
        self.rx.unpop();
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        device_type::CONSOLE
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        bit(EVENT_IDX) | bit(INDIRECT_DESC)
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        // No F_SIZE, F_MULTIPORT or F_EMERG_WRITE: the configuration fields are unused.
        data.fill(0);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        warn!("{NAME}: guest wrote config offset {offset:#x}; ignored");
    }

    fn activate(&mut self, params: ActivateParams) -> Result<(), ActivateError> {
        if self.worker.is_some() {
            return Err(ActivateError::AlreadyActive { device: NAME });
        }
        let input = match &self.input {
            Some(fd) => Some(fd.try_clone().map_err(|source| ActivateError::Worker {
                device: NAME,
                source,
            })?),
            None => None,
        };
        let w = ConsoleWorker::new(params, self.sink.clone(), input, self.metrics.clone())?;
        self.worker =
            Some(
                worker::spawn(NAME.into(), w).map_err(|source| ActivateError::Worker {
                    device: NAME,
                    source,
                })?,
            );
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(w) = self.worker.take() {
            w.stop();
        }
    }
}

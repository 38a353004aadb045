//! Virtio devices built from their settings (independent of the transport that carries them).

use std::fs::File;
use std::io::LineWriter;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use veil_devices::virtio::VirtioDevice;
use veil_devices::virtio::block::{Block, BlockConfig};
use veil_devices::virtio::console::{Console, ConsoleSink};
use veil_devices::virtio::net::{Net, NetConfig as DevNetConfig};
use veil_devices::virtio::rng::Rng;
use veil_devices::virtio::vsock::Vsock;

use super::DeviceManagerError;
use crate::virtio_config::{ConsoleOutput, VirtioDeviceConfig};

/// Queue size of every block queue.
const BLOCK_QUEUE_SIZE: u16 = 256;

/// A random locally administered unicast MAC (`02:xx:xx:xx:xx:xx` style).
fn random_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    // SAFETY: getrandom writes at most `mac.len()` bytes into the buffer we own.
    let n = unsafe { libc::getrandom(mac.as_mut_ptr().cast(), mac.len(), 0) };
    if n != mac.len() as isize {
        // No entropy (should not happen): a fixed address from the same range.
        mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    }
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

fn console_sink(out: &ConsoleOutput) -> Result<ConsoleSink, DeviceManagerError> {
    Ok(match out {
        ConsoleOutput::Stdout => Arc::new(Mutex::new(std::io::stdout())),
        ConsoleOutput::File(path) => {
            let f = File::create(path).map_err(|source| DeviceManagerError::ConsoleFile {
                path: path.clone(),
                source,
            })?;
            Arc::new(Mutex::new(LineWriter::new(f)))
        }
        ConsoleOutput::Off => Arc::new(Mutex::new(std::io::sink())),
    })
}

/// Opens what the device needs (image, tap, socket, file) and builds it.
pub(super) fn device(
    cfg: &VirtioDeviceConfig,
) -> Result<Box<dyn VirtioDevice>, DeviceManagerError> {
    Ok(match cfg {
        VirtioDeviceConfig::Disk(d) => {
            let block = Block::new(&BlockConfig {
                path: d.path.clone(),
                read_only: d.read_only,
                direct: d.direct,
                num_queues: d.num_queues,
                queue_size: BLOCK_QUEUE_SIZE,
                id: d.id.clone(),
                engine: d.engine,
            })
            .map_err(|source| DeviceManagerError::Disk {
                path: d.path.clone(),
                source,
            })?;
            let mut block = block;
            if let Some(us) = d.poll_us {
                block.set_poll_max(Duration::from_micros(u64::from(us)));
            }
            Box::new(block)
        }
        VirtioDeviceConfig::Net(n) => {
            let net = Net::new(&DevNetConfig {
                tap: n.tap.clone(),
                mac: n.mac.unwrap_or_else(random_mac),
            })
            .map_err(|source| DeviceManagerError::Net {
                tap: n.tap.clone(),
                source,
            })?;
            Box::new(net)
        }
        VirtioDeviceConfig::Vsock(v) => Box::new(Vsock::new(v.cid, &v.socket)?),
        VirtioDeviceConfig::Rng => Box::new(Rng::new()),
        VirtioDeviceConfig::Console(out) => Box::new(Console::new(
            console_sink(out)?,
            crate::stdin::console_input(out),
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_macs_are_local_unicast() {
        let a = random_mac();
        assert_eq!(a[0] & 3, 2);
        assert_ne!(a, random_mac());
    }
}

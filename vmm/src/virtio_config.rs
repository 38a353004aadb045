//! Virtio device settings of a [`crate::VmConfig`]: what each `--disk`, `--net`, `--vsock`,
//! `--rng` and `--console` asks for, parsed from `key=value,...` text and checked once.

use std::path::PathBuf;
use std::str::FromStr;

/// Most request queues a disk may have (the block device's limit).
pub const MAX_DISK_QUEUES: u16 = 16;
/// Most virtio-pci functions: bus 0 has 32 slots and the host bridge takes slot 0.
pub const MAX_PCI_DEVICES: usize = 31;
/// Most virtio-mmio devices: IOAPIC pins 5..=23.
pub const MAX_MMIO_DEVICES: usize = 19;
/// Longest block polling window `poll_us=` accepts (a polling session ends after 1 ms anyway).
pub const MAX_DISK_POLL_US: u32 = 1000;
/// Longest virtio-blk id (the GET_ID answer is 20 bytes).
pub const MAX_DISK_ID: usize = 20;
/// Longest Linux interface name (IFNAMSIZ - 1).
pub const MAX_TAP_NAME: usize = 15;

/// A bad virtio setting: names the flag, the key and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VirtioConfigError {
    /// A `key=value` item without `=`, or an empty item.
    #[error("--{flag}: {item:?} is not key=value")]
    NotKeyValue {
        /// The flag.
        flag: &'static str,
        /// The offending item.
        item: String,
    },
    /// A key the flag does not know.
    #[error("--{flag}: unknown key {key:?} (known: {known})")]
    UnknownKey {
        /// The flag.
        flag: &'static str,
        /// The key.
        key: String,
        /// The keys it knows.
        known: &'static str,
    },
    /// A key given twice.
    #[error("--{flag}: {key} given twice")]
    Repeated {
        /// The flag.
        flag: &'static str,
        /// The key.
        key: String,
    },
    /// A required key is missing.
    #[error("--{flag}: {key}= is required")]
    Missing {
        /// The flag.
        flag: &'static str,
        /// The key.
        key: &'static str,
    },
    /// A value out of its range or of the wrong form.
    #[error("--{flag}: {key}={value:?}: {why}")]
    BadValue {
        /// The flag.
        flag: &'static str,
        /// The key.
        key: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        why: &'static str,
    },
    /// More devices than a transport can place.
    #[error("{count} virtio-{transport} devices: at most {max} fit")]
    TooMany {
        /// The transport.
        transport: &'static str,
        /// Devices asked for.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Two vsock devices (a guest has one CID).
    #[error("--vsock given twice: a guest has one vsock device")]
    TwoVsocks,
    /// Two consoles.
    #[error("--console given twice")]
    TwoConsoles,
    /// Two rng devices.
    #[error("--rng given twice")]
    TwoRngs,
}

/// How a virtio device reaches the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// A modern virtio-pci function with MSI-X (the default).
    #[default]
    Pci,
    /// A virtio-mmio (version 2) window announced on the kernel command line.
    Mmio,
}

impl FromStr for Transport {
    type Err = VirtioConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_transport("transport", s)
    }
}

fn parse_transport(flag: &'static str, s: &str) -> Result<Transport, VirtioConfigError> {
    match s {
        "pci" => Ok(Transport::Pci),
        "mmio" => Ok(Transport::Mmio),
        _ => Err(VirtioConfigError::BadValue {
            flag,
            key: "transport",
            value: s.into(),
            why: "use pci or mmio",
        }),
    }
}

/// Which block backend serves a disk: the device's own choice, under the configuration's name.
pub use veil_devices::virtio::block::Engine as DiskEngine;

/// `--disk path=F[,readonly=on][,direct=on][,num_queues=N][,engine=...][,id=S][,poll_us=N]
/// [,transport=...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// The raw image.
    pub path: PathBuf,
    /// Refuse guest writes (the image is opened read-only).
    pub read_only: bool,
    /// Open the image with O_DIRECT.
    pub direct: bool,
    /// Request queues (1..=16), each served by its own thread.
    pub num_queues: u16,
    /// Backend.
    pub engine: DiskEngine,
    /// The GET_ID string (at most 20 bytes).
    pub id: Option<String>,
    /// Longest adaptive polling window of the queue workers in microseconds (0 turns polling
    /// off; None: the device's default, 32 us). docs/virtio.md, "Block polling".
    pub poll_us: Option<u32>,
    /// Transport override (None: the VM's `--transport`).
    pub transport: Option<Transport>,
}

impl DiskConfig {
    /// A read-write disk on `path` with one queue.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            read_only: false,
            direct: false,
            num_queues: 1,
            engine: DiskEngine::Auto,
            id: None,
            poll_us: None,
            transport: None,
        }
    }
}

/// `--net tap=NAME[,mac=MAC][,transport=...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// The tap interface (opened with IFF_VNET_HDR; created if missing and permitted).
    pub tap: String,
    /// The guest's MAC (None: a random locally administered one).
    pub mac: Option<[u8; 6]>,
    /// Transport override.
    pub transport: Option<Transport>,
}

/// `--vsock cid=N,socket=PATH[,transport=...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's CID (3 ..= 2^32 - 2).
    pub cid: u64,
    /// The host Unix socket (Firecracker's protocol; guest connections go to `PATH_<port>`).
    pub socket: PathBuf,
    /// Transport override.
    pub transport: Option<Transport>,
}

/// Where the virtio console's output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleOutput {
    /// This process's standard output.
    Stdout,
    /// A file, created or truncated at launch.
    File(PathBuf),
    /// Discarded (the device exists, its output goes nowhere).
    Off,
}

impl FromStr for ConsoleOutput {
    type Err = VirtioConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why| VirtioConfigError::BadValue {
            flag: "console",
            key: "output",
            value: s.into(),
            why,
        };
        match s {
            "stdio" => Ok(Self::Stdout),
            "off" => Ok(Self::Off),
            _ => match s.strip_prefix("file=") {
                Some("") => Err(bad("file= needs a path")),
                Some(p) => Ok(Self::File(p.into())),
                None => Err(bad("use stdio, file=PATH or off")),
            },
        }
    }
}

/// One virtio device, in the order the guest sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VirtioDeviceConfig {
    /// virtio-blk.
    Disk(DiskConfig),
    /// virtio-net.
    Net(NetConfig),
    /// virtio-vsock.
    Vsock(VsockConfig),
    /// virtio-rng.
    Rng,
    /// virtio-console.
    Console(ConsoleOutput),
}

impl VirtioDeviceConfig {
    /// The device's own transport choice, if it made one.
    pub fn transport(&self) -> Option<Transport> {
        match self {
            Self::Disk(d) => d.transport,
            Self::Net(n) => n.transport,
            Self::Vsock(v) => v.transport,
            Self::Rng | Self::Console(_) => None,
        }
    }
}

/// `key=value` items of one flag value, each key at most once.
fn items<'a>(
    flag: &'static str,
    s: &'a str,
    known: &'static str,
) -> Result<Vec<(&'a str, &'a str)>, VirtioConfigError> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for item in s.split(',') {
        let Some((k, v)) = item.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            return Err(VirtioConfigError::NotKeyValue {
                flag,
                item: item.into(),
            });
        };
        if !known.split(", ").any(|x| x == k) {
            return Err(VirtioConfigError::UnknownKey {
                flag,
                key: k.into(),
                known,
            });
        }
        if out.iter().any(|(x, _)| *x == k) {
            return Err(VirtioConfigError::Repeated {
                flag,
                key: k.into(),
            });
        }
        out.push((k, v));
    }
    Ok(out)
}

fn on_off(flag: &'static str, key: &'static str, v: &str) -> Result<bool, VirtioConfigError> {
    match v {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(VirtioConfigError::BadValue {
            flag,
            key,
            value: v.into(),
            why: "use on or off",
        }),
    }
}

fn non_empty(flag: &'static str, key: &'static str, v: &str) -> Result<(), VirtioConfigError> {
    if v.is_empty() {
        return Err(VirtioConfigError::BadValue {
            flag,
            key,
            value: v.into(),
            why: "must not be empty",
        });
    }
    Ok(())
}

impl FromStr for DiskConfig {
    type Err = VirtioConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const F: &str = "disk";
        let mut d = DiskConfig::new("");
        let mut have_path = false;
        for (k, v) in items(
            F,
            s,
            "path, readonly, direct, num_queues, engine, id, poll_us, transport",
        )? {
            match k {
                "path" => {
                    non_empty(F, "path", v)?;
                    d.path = v.into();
                    have_path = true;
                }
                "readonly" => d.read_only = on_off(F, "readonly", v)?,
                "direct" => d.direct = on_off(F, "direct", v)?,
                "num_queues" => {
                    d.num_queues = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_DISK_QUEUES).contains(n))
                        .ok_or_else(|| VirtioConfigError::BadValue {
                            flag: F,
                            key: "num_queues",
                            value: v.into(),
                            why: "a number from 1 to 16",
                        })?
                }
                "engine" => {
                    d.engine = match v {
                        "auto" => DiskEngine::Auto,
                        "sync" => DiskEngine::Sync,
                        "io_uring" => DiskEngine::IoUring,
                        _ => {
                            return Err(VirtioConfigError::BadValue {
                                flag: F,
                                key: "engine",
                                value: v.into(),
                                why: "use auto, sync or io_uring",
                            });
                        }
                    }
                }
                "id" => d.id = Some(v.into()),
                "poll_us" => {
                    d.poll_us = Some(v.parse().map_err(|_| VirtioConfigError::BadValue {
                        flag: F,
                        key: "poll_us",
                        value: v.into(),
                        why: "a number of microseconds from 0 (no polling) to 1000",
                    })?)
                }
                _ => d.transport = Some(parse_transport(F, v)?),
            }
        }
        if !have_path {
            return Err(VirtioConfigError::Missing {
                flag: F,
                key: "path",
            });
        }
        d.validate()?;
        Ok(d)
    }
}

impl DiskConfig {
    /// Checks the settings a library user may have set directly.
    pub fn validate(&self) -> Result<(), VirtioConfigError> {
        const F: &str = "disk";
        non_empty(F, "path", &self.path.to_string_lossy())?;
        if let Some(us) = self.poll_us.filter(|us| *us > MAX_DISK_POLL_US) {
            return Err(VirtioConfigError::BadValue {
                flag: F,
                key: "poll_us",
                value: us.to_string(),
                why: "a number of microseconds from 0 (no polling) to 1000",
            });
        }
        if !(1..=MAX_DISK_QUEUES).contains(&self.num_queues) {
            return Err(VirtioConfigError::BadValue {
                flag: F,
                key: "num_queues",
                value: self.num_queues.to_string(),
                why: "a number from 1 to 16",
            });
        }
        if let Some(id) = &self.id {
            if id.is_empty() || id.len() > MAX_DISK_ID {
                return Err(VirtioConfigError::BadValue {
                    flag: F,
                    key: "id",
                    value: id.clone(),
                    why: "1 to 20 bytes",
                });
            }
        }
        Ok(())
    }
}

/// Parses `aa:bb:cc:dd:ee:ff` into a unicast MAC.
fn parse_mac(v: &str) -> Result<[u8; 6], VirtioConfigError> {
    let bad = |why| VirtioConfigError::BadValue {
        flag: "net",
        key: "mac",
        value: v.into(),
        why,
    };
    let parts: Vec<&str> = v.split(':').collect();
    if parts.len() != 6 {
        return Err(bad(
            "six hex bytes separated by colons, e.g. 02:00:00:00:00:01",
        ));
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(&parts) {
        if p.len() != 2 {
            return Err(bad(
                "six hex bytes separated by colons, e.g. 02:00:00:00:00:01",
            ));
        }
        *b = u8::from_str_radix(p, 16)
            .map_err(|_| bad("six hex bytes separated by colons, e.g. 02:00:00:00:00:01"))?;
    }
    if mac[0] & 1 != 0 {
        return Err(bad("a multicast address cannot be a card's MAC"));
    }
    if mac == [0; 6] {
        return Err(bad("the all-zero address cannot be a card's MAC"));
    }
    Ok(mac)
}

impl FromStr for NetConfig {
    type Err = VirtioConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const F: &str = "net";
        let mut tap = None;
        let mut mac = None;
        let mut transport = None;
        for (k, v) in items(F, s, "tap, mac, transport")? {
            match k {
                "tap" => tap = Some(v.to_string()),
                "mac" => mac = Some(parse_mac(v)?),
                _ => transport = Some(parse_transport(F, v)?),
            }
        }
        let n = NetConfig {
            tap: tap.ok_or(VirtioConfigError::Missing {
                flag: F,
                key: "tap",
            })?,
            mac,
            transport,
        };
        n.validate()?;
        Ok(n)
    }
}

impl NetConfig {
    /// Checks the settings a library user may have set directly.
    pub fn validate(&self) -> Result<(), VirtioConfigError> {
        let t = &self.tap;
        if t.is_empty()
            || t.len() > MAX_TAP_NAME
            || t.contains(['/', '\0'])
            || t.chars().any(char::is_whitespace)
        {
            return Err(VirtioConfigError::BadValue {
                flag: "net",
                key: "tap",
                value: t.clone(),
                why: "an interface name of 1 to 15 bytes without '/' or spaces",
            });
        }
        if let Some(m) = self.mac {
            let text = m
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":");
            parse_mac(&text)?;
        }
        Ok(())
    }
}

impl FromStr for VsockConfig {
    type Err = VirtioConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const F: &str = "vsock";
        let mut cid = None;
        let mut socket = None;
        let mut transport = None;
        for (k, v) in items(F, s, "cid, socket, transport")? {
            match k {
                "cid" => {
                    cid = Some(v.parse::<u64>().map_err(|_| VirtioConfigError::BadValue {
                        flag: F,
                        key: "cid",
                        value: v.into(),
                        why: "a number from 3 to 4294967294",
                    })?)
                }
                "socket" => {
                    non_empty(F, "socket", v)?;
                    socket = Some(PathBuf::from(v));
                }
                _ => transport = Some(parse_transport(F, v)?),
            }
        }
        let c = VsockConfig {
            cid: cid.ok_or(VirtioConfigError::Missing {
                flag: F,
                key: "cid",
            })?,
            socket: socket.ok_or(VirtioConfigError::Missing {
                flag: F,
                key: "socket",
            })?,
            transport,
        };
        c.validate()?;
        Ok(c)
    }
}

impl VsockConfig {
    /// Checks the settings a library user may have set directly.
    pub fn validate(&self) -> Result<(), VirtioConfigError> {
        if self.cid < 3 || self.cid >= u64::from(u32::MAX) {
            return Err(VirtioConfigError::BadValue {
                flag: "vsock",
                key: "cid",
                value: self.cid.to_string(),
                why: "0, 1 and 2 are reserved and CIDs are 32-bit: use 3 to 4294967294",
            });
        }
        non_empty("vsock", "socket", &self.socket.to_string_lossy())
    }
}

/// The `virtio_mmio.device=<size>@<base>:<pin>` tokens that announce the virtio-mmio devices
/// among `devices` (in order; `default` for those without their own transport), as Veil
/// appends them to a kernel's command line. A confidential direct boot puts them into the
/// measured command line itself.
pub fn mmio_tokens(devices: &[VirtioDeviceConfig], default: Transport) -> Vec<String> {
    devices
        .iter()
        .filter(|d| d.transport().unwrap_or(default) == Transport::Mmio)
        .enumerate()
        .map(|(i, _)| {
            let (base, pin) = crate::device_manager::mmio_slot(i);
            veil_devices::virtio::mmio::MmioTransport::cmdline_arg(base, pin)
        })
        .collect()
}

/// Checks a VM's device list: each device's settings, one vsock/rng/console at most, and room on
/// each transport.
pub fn validate(
    devices: &[VirtioDeviceConfig],
    default: Transport,
) -> Result<(), VirtioConfigError> {
    let (mut vsocks, mut rngs, mut consoles, mut pci, mut mmio) = (0, 0, 0, 0, 0);
    for d in devices {
        match d {
            VirtioDeviceConfig::Disk(x) => x.validate()?,
            VirtioDeviceConfig::Net(x) => x.validate()?,
            VirtioDeviceConfig::Vsock(x) => {
                x.validate()?;
                vsocks += 1;
            }
            VirtioDeviceConfig::Rng => rngs += 1,
            VirtioDeviceConfig::Console(_) => consoles += 1,
        }
        match d.transport().unwrap_or(default) {
            Transport::Pci => pci += 1,
            Transport::Mmio => mmio += 1,
        }
    }
    if vsocks > 1 {
        return Err(VirtioConfigError::TwoVsocks);
    }
    if rngs > 1 {
        return Err(VirtioConfigError::TwoRngs);
    }
    if consoles > 1 {
        return Err(VirtioConfigError::TwoConsoles);
    }
    if pci > MAX_PCI_DEVICES {
        return Err(VirtioConfigError::TooMany {
            transport: "pci",
            count: pci,
            max: MAX_PCI_DEVICES,
        });
    }
    if mmio > MAX_MMIO_DEVICES {
        return Err(VirtioConfigError::TooMany {
            transport: "mmio",
            count: mmio,
            max: MAX_MMIO_DEVICES,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_parse_with_every_key() {
        let d: DiskConfig =
            "path=/x.img,readonly=on,direct=on,num_queues=4,engine=io_uring,id=abc,transport=mmio"
                .parse()
                .unwrap();
        assert_eq!(d.path, PathBuf::from("/x.img"));
        assert!(d.read_only && d.direct);
        assert_eq!(d.num_queues, 4);
        assert_eq!(d.engine, DiskEngine::IoUring);
        assert_eq!(d.id.as_deref(), Some("abc"));
        assert_eq!(d.transport, Some(Transport::Mmio));
        let plain: DiskConfig = "path=a".parse().unwrap();
        assert_eq!(plain, DiskConfig::new("a"));
    }

    #[test]
    fn bad_disks_name_the_key() {
        let e = |s: &str| s.parse::<DiskConfig>().unwrap_err().to_string();
        assert!(e("readonly=on").contains("path= is required"));
        assert!(e("path=a,num_queues=0").contains("num_queues"));
        assert!(e("path=a,poll_us=1001").contains("0 (no polling) to 1000"));
        assert!(e("path=a,poll_us=-1").contains("poll_us"));
        assert_eq!(
            "path=a,poll_us=0".parse::<DiskConfig>().unwrap().poll_us,
            Some(0)
        );
        assert_eq!("path=a".parse::<DiskConfig>().unwrap().poll_us, None);
        assert!(e("path=a,num_queues=17").contains("1 to 16"));
        assert!(e("path=a,engine=aio").contains("engine"));
        assert!(e("path=a,readonly=maybe").contains("on or off"));
        assert!(e("path=a,size=1").contains("unknown key \"size\""));
        assert!(e("path=a,path=b").contains("twice"));
        assert!(e("path=a,id=123456789012345678901").contains("20 bytes"));
        assert!(e("path=").contains("empty"));
        assert!(e("a.img").contains("key=value"));
        assert!(e("path=a,transport=isa").contains("pci or mmio"));
    }

    #[test]
    fn nets_and_vsocks() {
        let n: NetConfig = "tap=tap0,mac=02:00:00:00:00:01".parse().unwrap();
        assert_eq!(n.mac, Some([2, 0, 0, 0, 0, 1]));
        assert!(
            "tap=tap0,mac=01:00:00:00:00:01"
                .parse::<NetConfig>()
                .is_err()
        );
        assert!("tap=tap0,mac=02:00:00:00:00".parse::<NetConfig>().is_err());
        assert!("tap=a-very-long-tap-name".parse::<NetConfig>().is_err());
        assert!("mac=02:00:00:00:00:01".parse::<NetConfig>().is_err());
        let v: VsockConfig = "cid=3,socket=/tmp/v.sock".parse().unwrap();
        assert_eq!((v.cid, v.socket.to_str()), (3, Some("/tmp/v.sock")));
        for bad in [
            "cid=2,socket=/s",
            "cid=4294967295,socket=/s",
            "cid=x,socket=/s",
            "cid=3",
        ] {
            assert!(bad.parse::<VsockConfig>().is_err(), "{bad}");
        }
    }

    #[test]
    fn device_lists_are_bounded() {
        let rng = VirtioDeviceConfig::Rng;
        assert!(validate(std::slice::from_ref(&rng), Transport::Pci).is_ok());
        assert_eq!(
            validate(&[rng.clone(), rng.clone()], Transport::Pci),
            Err(VirtioConfigError::TwoRngs)
        );
        let disks: Vec<_> = (0..20)
            .map(|i| VirtioDeviceConfig::Disk(DiskConfig::new(format!("d{i}"))))
            .collect();
        assert!(validate(&disks, Transport::Pci).is_ok());
        assert!(matches!(
            validate(&disks, Transport::Mmio),
            Err(VirtioConfigError::TooMany { max: 19, .. })
        ));
        assert_eq!("stdio".parse(), Ok(ConsoleOutput::Stdout));
        assert!("file=".parse::<ConsoleOutput>().is_err());
        assert!("tcp".parse::<ConsoleOutput>().is_err());
    }
}

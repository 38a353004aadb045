//! virtio-net through the real KVM path with the probe's driver, both transports: the guest's
//! ping frame leaves through a tap in a network namespace the test creates, a host-side peer (an
//! AF_PACKET socket on the tap, inside the namespace) answers with the pong frame, and the guest
//! receives it.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use veil_tests::{bin, run_with_limit};

const ETHERTYPE: u16 = 0x88b5;
const GUEST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x07];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
const TAP: &str = "vtap0";

/// Removes the namespace (and the tap in it) when the test ends.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why this machine cannot run the test, if it cannot.
fn missing() -> Option<String> {
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root to create a network namespace and a tap".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun does not exist".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("the `ip` tool (iproute2) is not installed".into());
    }
    None
}

fn check(r: libc::c_int, what: &str) {
    assert!(r >= 0, "{what}: {}", std::io::Error::last_os_error());
}

/// The host-side peer, on its own thread inside the namespace: answers the guest's ping frame
/// with a pong frame to the guest's MAC. Returns the ping's source MAC.
fn peer(ns: &str, ready: mpsc::Sender<()>) -> [u8; 6] {
    let nsfile = File::open(format!("/run/netns/{ns}")).expect("the namespace file");
    // SAFETY: setns on a namespace descriptor we hold; it only moves this thread.
    check(
        unsafe { libc::setns(nsfile.as_raw_fd(), libc::CLONE_NEWNET) },
        "setns",
    );
    let proto = ETHERTYPE.to_be();
    // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    check(fd, "socket(AF_PACKET)");
    let name = CString::new(TAP).unwrap();
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(ifindex, 0, "{TAP} exists in the namespace");
    // SAFETY: sockaddr_ll is plain data; zero is a valid start.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: binds `fd` to a sockaddr_ll of the size we pass.
    check(
        unsafe {
            libc::bind(
                fd,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        },
        "bind",
    );
    let tv = libc::timeval {
        tv_sec: 60,
        tv_usec: 0,
    };
    // SAFETY: SO_RCVTIMEO takes a timeval of the size we pass.
    check(
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        },
        "SO_RCVTIMEO",
    );
    ready.send(()).unwrap();
    let mut buf = [0u8; 2048];
    loop {
        // SAFETY: reads into `buf`, at most its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        check(n as i32, "recv (no ping from the guest within 60 s)");
        let frame = &buf[..n as usize];
        if frame.len() < 14 + 15 || &frame[14..29] != b"veil-probe-ping" {
            continue; // our own pong, or something else
        }
        let mut src = [0u8; 6];
        src.copy_from_slice(&frame[6..12]);
        let mut pong = [0u8; 60];
        pong[..6].copy_from_slice(&src);
        pong[6..12].copy_from_slice(&PEER_MAC);
        pong[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
        pong[14..29].copy_from_slice(b"veil-probe-pong");
        // SAFETY: sends `pong` on the bound socket.
        let sent = unsafe { libc::send(fd, pong.as_ptr().cast(), pong.len(), 0) };
        check(sent as i32, "send");
        // SAFETY: `fd` is ours and no longer used.
        unsafe { libc::close(fd) };
        return src;
    }
}

fn ping_pong(transport: &str) {
    if let Some(why) = missing() {
        eprintln!("skipping virtio-net test: {why}");
        return;
    }
    let ns = Netns(format!("veil-net-{}-{transport}", std::process::id()));
    if let Err(e) = ip(&["netns", "add", &ns.0]) {
        eprintln!("skipping virtio-net test: cannot create a network namespace: {e}");
        return;
    }
    ip(&["-n", &ns.0, "tuntap", "add", "dev", TAP, "mode", "tap"]).unwrap();
    ip(&["-n", &ns.0, "link", "set", TAP, "up"]).unwrap();
    let (ready_tx, ready_rx) = mpsc::channel();
    let name = ns.0.clone();
    let peer = std::thread::spawn(move || peer(&name, ready_tx));
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the peer is ready");
    let mac = GUEST_MAC
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.0]).arg(bin("veil")).args([
        "run",
        "--transport",
        transport,
        "--net",
        &format!("tap={TAP},mac={mac}"),
        "--cmdline",
        "probe.run=net",
    ]);
    let out = run_with_limit(cmd, Duration::from_secs(60));
    out.expect_status(0);
    assert!(out.stdout.contains("PROBE ok net\r\n"), "{out:#?}");
    assert_eq!(out.probe_info("net_mac"), Some(mac), "{out:#?}");
    assert_eq!(out.probe_info("net_transport").as_deref(), Some(transport));
    assert_eq!(
        peer.join().unwrap(),
        GUEST_MAC,
        "the ping came from the guest's MAC"
    );
}

#[test]
fn frames_go_both_ways_through_a_tap_pci() {
    ping_pong("pci");
}

#[test]
fn frames_go_both_ways_through_a_tap_mmio() {
    ping_pong("mmio");
}

//! virtio-vsock through the real KVM path with the probe's driver, both transports: a guest
//! connection reaches a host Unix socket listener (`<socket>_<port>`) and gets its answer, and a
//! host connection (`CONNECT 1234`) reaches the guest's listener and is echoed.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use veil_tests::{bin, temp_dir};

const PORT: u32 = 5005;
const HOST_DATA: &[u8] = b"hello guest, this is the host\n";

fn both_directions(transport: &str) {
    let dir = temp_dir(&format!("vsock-{transport}"));
    let socket = dir.join("v.sock");
    // Guest-initiated connections to port P go to `<socket>_P`.
    let listener = UnixListener::bind(format!("{}_{PORT}", socket.display())).unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut ping = [0u8; 16];
        conn.read_exact(&mut ping).unwrap();
        conn.write_all(b"veil-vsock-pong\n").unwrap();
        ping
    });

    let mut child = Command::new(bin("veil"))
        .args([
            "run",
            "--transport",
            transport,
            "--vsock",
            &format!("cid=7,socket={}", socket.display()),
            "--cmdline",
            &format!("probe.run=vsock probe.vsock_port={PORT} probe.vsock_listen=1"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let mut echoed = None;
    let mut connected = None;
    loop {
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => l,
            Err(_) => {
                // Silent for a minute (or veil ended): do not wait for it forever.
                let _ = child.kill();
                break;
            }
        };
        if line.starts_with("PROBE info vsock_listen_port=1234") {
            // The guest listens: connect from the host side.
            let mut s = UnixStream::connect(&socket).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            s.write_all(b"CONNECT 1234\n").unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut ok = String::new();
            r.read_line(&mut ok).unwrap();
            connected = Some(ok.clone());
            s.write_all(HOST_DATA).unwrap();
            let mut back = vec![0u8; HOST_DATA.len()];
            r.read_exact(&mut back).unwrap();
            echoed = Some(back);
            drop(r);
            s.shutdown(std::net::Shutdown::Both).unwrap();
        }
        let last = line.starts_with("PROBE PASS") || line.starts_with("PROBE FAIL");
        lines.push(line);
        if last {
            break;
        }
    }
    let status = child.wait().unwrap();
    let _ = reader.join();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let out = lines.join("\n");
    assert!(status.success(), "status {status:?}\n{out}\n{err}");
    assert!(out.contains("PROBE ok vsock-connect"), "{out}\n{err}");
    assert!(out.contains("PROBE ok vsock-listen"), "{out}\n{err}");
    assert!(
        out.contains(&format!("PROBE info vsock_transport={transport}")),
        "{out}"
    );
    assert!(out.contains("PROBE info vsock_cid=7"), "{out}");
    assert_eq!(&server.join().unwrap(), b"veil-vsock-ping\n");
    let ok = connected.expect("the guest listened");
    assert!(ok.starts_with("OK "), "{ok:?}");
    assert_eq!(echoed.as_deref(), Some(HOST_DATA));
}

#[test]
fn streams_flow_both_ways_pci() {
    both_directions("pci");
}

#[test]
fn streams_flow_both_ways_mmio() {
    both_directions("mmio");
}

/// Every thread of a guest with devices runs under a seccomp filter: the vCPUs, the VMM thread,
/// the device service thread and the device worker it started (looked at while the guest's
/// vsock listener waits for a host connection).
#[test]
fn device_threads_are_filtered() {
    let dir = temp_dir("vsock-seccomp");
    let socket = dir.join("v.sock");
    let mut child = Command::new(bin("veil"))
        .args([
            "run",
            "--vsock",
            &format!("cid=9,socket={}", socket.display()),
            "--cmdline",
            "probe.run=vsock probe.vsock_listen=1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let ready = lines.any(|l| l.is_ok_and(|l| l.starts_with("PROBE info vsock_listen_port")));
    let mut threads = Vec::new();
    if ready {
        for task in std::fs::read_dir(format!("/proc/{}/task", child.id())).unwrap() {
            let Ok(status) = std::fs::read_to_string(task.unwrap().path().join("status")) else {
                continue;
            };
            let field = |k: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(k))
                    .map(|v| v.trim().to_string())
                    .unwrap_or_default()
            };
            threads.push((field("Name:"), field("Seccomp:")));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready, "the guest's vsock listener came up");
    let names: Vec<&str> = threads.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"veil-devices"), "{threads:?}");
    assert!(names.contains(&"virtio-vsock"), "{threads:?}");
    assert!(threads.iter().all(|(_, m)| m == "2"), "{threads:?}");
}

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

/// A guest with every device but net runs them all under the default seccomp filters (the
/// default action kills the process, so the disk, rng and console checks passing means their
/// workers needed nothing the filters forbid), and every thread still alive while the guest's
/// vsock listener waits is filtered: the vCPUs, the VMM thread, the device service thread and the
/// vsock worker, which holds two filters (the VMM role's, inherited from the service thread, and
/// its own). The probe resets each device after its check, which ends that device's worker. Net
/// has its own test (it needs a tap in a namespace), also under the default filters.
#[test]
fn every_device_thread_is_filtered() {
    let dir = temp_dir("vsock-seccomp");
    let socket = dir.join("v.sock");
    let image = dir.join("disk.img");
    std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
    let console = dir.join("console.txt");
    let mut child = Command::new(bin("veil"))
        .args(["run", "--cpus", "2", "--rng"])
        .arg("--disk")
        .arg(format!("path={}", image.display()))
        .arg("--console")
        .arg(format!("file={}", console.display()))
        .arg("--vsock")
        .arg(format!("cid=9,socket={}", socket.display()))
        .args([
            "--cmdline",
            "probe.run=blk,rng,console,vsock probe.vsock_listen=1 \
             probe.blk_write=000102030405060708090a0b0c0d0e0f",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    let ready = lines.any(|l| {
        let l = l.unwrap_or_default();
        seen.push(l.clone());
        l.starts_with("PROBE info vsock_listen_port")
    });
    // (name, Seccomp mode, Seccomp_filters count) of every thread. Devices are activated on
    // the service thread after the guest's DRIVER_OK write, which the guest does not wait for,
    // so look again until the vsock worker has run its setup (or 10 s have passed).
    let mut threads = Vec::new();
    if ready {
        let start = std::time::Instant::now();
        loop {
            threads = thread_filters(child.id());
            let settled = threads
                .iter()
                .any(|(n, _, c)| n == "virtio-vsock" && c == "2");
            if settled || start.elapsed() > std::time::Duration::from_secs(10) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready, "the guest's vsock listener came up: {seen:?}");
    for check in ["PROBE ok blk", "PROBE ok rng", "PROBE ok console"] {
        assert!(
            seen.iter().any(|l| l.starts_with(check)),
            "{check}: {seen:?}"
        );
    }
    let names: Vec<&str> = threads.iter().map(|(n, _, _)| n.as_str()).collect();
    for name in ["veil-devices", "virtio-vsock", "vcpu0", "vcpu1"] {
        assert!(names.contains(&name), "{name} missing: {threads:?}");
    }
    assert!(threads.iter().all(|(_, m, _)| m == "2"), "{threads:?}");
    for (name, _, count) in &threads {
        if name.starts_with("virtio-") {
            assert_eq!(
                count, "2",
                "{name} should hold the VMM and worker filters: {threads:?}"
            );
        }
    }
}

/// (name, Seccomp mode, Seccomp_filters count) of every thread of process `pid`.
fn thread_filters(pid: u32) -> Vec<(String, String, String)> {
    let mut threads = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        threads.push((field("Name:"), field("Seccomp:"), field("Seccomp_filters:")));
    }
    threads
}

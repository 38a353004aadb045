//! vsock throughput, Veil alone (QEMU's virtio-vsock needs vhost-vsock, which these hosts lack).
//!
//! ```text
//! vsock_bench [--runs N] [--mib M] [--veil PATH]
//! ```
//!
//! Each run starts `veil run --vsock cid=3,socket=S --cmdline "probe.run=vsock
//! probe.vsock_listen=1"`, waits for the probe's listener, connects through the Unix socket
//! (`CONNECT 1234`), streams `--mib` MiB (default 64) while reading the probe's echo on another
//! thread, and times first byte sent to last byte echoed. The payload is checked on return, and
//! the probe must report `PROBE ok vsock-listen`. Prints the median echo throughput.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use veil_benches::{in_scratch_dir, median};

fn main() {
    if let Err(e) = run() {
        eprintln!("vsock_bench: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let (mut runs, mut mib) = (5usize, 64usize);
    let mut veil: PathBuf = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("veil")))
        .unwrap_or_else(|| PathBuf::from("veil"));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let v = args
            .next()
            .with_context(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--runs" => runs = v.parse().with_context(|| format!("--runs {v}"))?,
            "--mib" => mib = v.parse().with_context(|| format!("--mib {v}"))?,
            "--veil" => veil = v.into(),
            other => bail!("unknown argument {other}"),
        }
    }
    if runs == 0 || mib == 0 {
        bail!("--runs and --mib must be at least 1");
    }
    let got = in_scratch_dir("vsock-bench", |scratch| {
        (0..runs)
            .map(|i| once(&veil, &scratch.join(format!("v{i}.sock")), mib << 20))
            .collect::<Result<Vec<_>>>()
    })?;
    let med = median(&got).unwrap_or(f64::NAN);
    let min = got.iter().copied().fold(f64::MAX, f64::min);
    let max = got.iter().copied().fold(f64::MIN, f64::max);
    println!(
        "vsock echo, {mib} MiB per run, {runs} runs: median {med:.1} MiB/s (min {min:.1}, max {max:.1})"
    );
    println!("RESULT vsock_bench veil echo_mibps={med:.1}");
    Ok(())
}

/// One run: the echo throughput in MiB/s.
fn once(veil: &Path, socket: &Path, bytes: usize) -> Result<f64> {
    let mut child = Command::new(veil)
        .args(["run", "--vsock"])
        .arg(format!("cid=3,socket={}", socket.display()))
        .args(["--cmdline", "probe.run=vsock probe.vsock_listen=1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", veil.display()))?;
    let r = drive(&mut child, socket, bytes);
    if r.is_err() {
        let _ = child.kill();
    }
    let _ = child.wait();
    r
}

fn drive(child: &mut std::process::Child, socket: &Path, bytes: usize) -> Result<f64> {
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    if !lines.any(|l| l.is_ok_and(|l| l.starts_with("PROBE info vsock_listen_port"))) {
        bail!("the probe's vsock listener never came up");
    }
    let mut s =
        UnixStream::connect(socket).with_context(|| format!("connecting {}", socket.display()))?;
    s.write_all(b"CONNECT 1234\n").context("CONNECT")?;
    let mut reply = Vec::new();
    let mut b = [0u8; 1];
    while b[0] != b'\n' {
        s.read_exact(&mut b).context("reading the CONNECT reply")?;
        reply.push(b[0]);
    }
    if !reply.starts_with(b"OK ") {
        bail!(
            "CONNECT 1234 answered {:?}",
            String::from_utf8_lossy(&reply)
        );
    }
    let data: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
    let mut w = s.try_clone().context("cloning the stream")?;
    let start = Instant::now();
    let sender = std::thread::spawn(move || w.write_all(&data));
    let mut back = vec![0u8; bytes];
    s.read_exact(&mut back).context("reading the echo")?;
    let secs = start.elapsed().as_secs_f64();
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("the sender thread panicked"))?
        .context("sending")?;
    if let Some(i) = back
        .iter()
        .enumerate()
        .position(|(i, &b)| b != (i % 251) as u8)
    {
        bail!("the echo differs at byte {i}");
    }
    s.shutdown(std::net::Shutdown::Both).context("shutdown")?;
    if !lines.any(|l| l.is_ok_and(|l| l.starts_with("PROBE ok vsock-listen"))) {
        bail!("the probe did not report PROBE ok vsock-listen");
    }
    Ok(bytes as f64 / f64::from(1 << 20) / secs)
}

//! The confidential vCPU rules against the real code paths they exist for, each in a child
//! process of this test binary (a missing rule kills the whole process with `SIGSYS`): the
//! child installs the vCPU filter on its test thread, then does what a vCPU thread does.

use std::os::unix::process::ExitStatusExt;

use kvm_ioctls::{HypercallExit, VcpuExit};
use veil_launch::runtime::ExitAction;
use veil_launch::sys::{KVM_HC_MAP_GPA_RANGE, KVM_MAP_GPA_RANGE_ENCRYPTED};
use veil_launch::tdx::quote::QuoteService;

use super::{Filters, Role, SeccompLevel, VcpuNeeds};
use crate::memory::MemoryLayout;
use crate::platform::{self, PlatformExits};

/// Which child to be, and with which vCPU filter: `<what>:<with|without>`.
const CHILD: &str = "VEIL_VCPU_FILTER_CHILD";

fn child_role() -> Option<(String, bool)> {
    let v = std::env::var(CHILD).ok()?;
    let (what, with) = v.split_once(':')?;
    Some((what.to_string(), with == "with"))
}

fn filter(needs: VcpuNeeds) {
    Filters::with_vcpu_needs(SeccompLevel::On, needs)
        .unwrap()
        .install(Role::Vcpu)
        .unwrap();
}

/// Where a child keeps its files (made and removed by the parent).
const DIR: &str = "VEIL_VCPU_FILTER_DIR";

/// Runs test `name` of this module in a child process as `<what>:<with|without>`.
fn child(name: &str, what: &str, with: bool) -> std::process::Output {
    let dir = std::env::temp_dir().join(format!(
        "veil-vcpu-filter-{}-{what}-{with}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &format!("seccomp::vcpu_tests::{name}"),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            CHILD,
            format!("{what}:{}", if with { "with" } else { "without" }),
        )
        .env(DIR, &dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// Child: a guest_memfd VM, then page-state hypercall exits through the platform hook as the
/// run loop hands them, and both kinds of backing release.
#[test]
fn child_conversions() {
    let Some((what, with)) = child_role().filter(|(w, _)| w == "conversions") else {
        return;
    };
    let p = match platform::plain(&MemoryLayout::new(8 << 20)) {
        Ok(p) => p,
        Err(e) => {
            println!("SKIP {e}");
            return;
        }
    };
    filter(VcpuNeeds {
        memory_conversions: with,
        quote_socket: false,
    });
    let gpa = 0x20_0000;
    for attrs in [0, KVM_MAP_GPA_RANGE_ENCRYPTED] {
        let mut ret = 0xdead;
        let mut exit = VcpuExit::Hypercall(HypercallExit {
            nr: KVM_HC_MAP_GPA_RANGE,
            args: [gpa, 1, attrs, 0, 0, 0],
            ret: &mut ret,
            longmode: 1,
        });
        assert_eq!(p.platform.handle_exit(&mut exit), Some(ExitAction::Resume));
        println!("RET attrs={attrs:#x} ret={}", ret as i64);
    }
    // Whatever this kernel's attributes allowed above, both releases run here.
    p.platform.with_vm(|vm| {
        vm.discard(gpa, 0x1000, true).unwrap();
        vm.discard(gpa, 0x1000, false).unwrap();
    });
    println!("CHILD DONE {what}");
}

/// Child: a fake quote generation service on an unfiltered thread, then GetQuote forwarded to
/// it from the filtered thread.
#[test]
fn child_quote() {
    let Some((what, with)) = child_role().filter(|(w, _)| w == "quote") else {
        return;
    };
    let path = std::path::Path::new(&std::env::var_os(DIR).unwrap()).join("qgs.socket");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || fake_qgs(listener));
    filter(VcpuNeeds {
        memory_conversions: false,
        quote_socket: with,
    });
    let quote = QuoteService::unix(&path).get_quote(&[0x5a; 1024]).unwrap();
    assert_eq!(quote, vec![0xa5; 1024]);
    println!("CHILD DONE {what}");
}

/// Answers one QGS GetQuote request with the report's bytes inverted as the "quote".
fn fake_qgs(listener: std::os::unix::net::UnixListener) {
    use std::io::{Read, Write};
    let (mut s, _) = listener.accept().unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut req = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut req).unwrap();
    s.write_all(&fake_qgs_reply(&req)).unwrap();
}

/// A QGS GetQuote reply (length-prefixed message) to `req` whose "quote" is the request's
/// report bytes inverted.
pub(crate) fn fake_qgs_reply(req: &[u8]) -> Vec<u8> {
    let quote: Vec<u8> = req[24..].iter().map(|b| b ^ 0xff).collect();
    let size = (16 + 8 + quote.len()) as u32;
    let mut resp = size.to_be_bytes().to_vec();
    resp.extend_from_slice(&1u16.to_le_bytes());
    resp.extend_from_slice(&0u16.to_le_bytes());
    for v in [1u32, size, 0, 0, quote.len() as u32] {
        resp.extend_from_slice(&v.to_le_bytes());
    }
    resp.extend_from_slice(&quote);
    resp
}

fn passes_only_with_the_rules(name: &str, what: &str) -> Option<String> {
    let out = child(name, what, true);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if let Some(why) = stdout.lines().find_map(|l| l.strip_prefix("SKIP ")) {
        eprintln!("skipped: {why}");
        return None;
    }
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains(&format!("CHILD DONE {what}")), "{stdout}");
    let out = child(name, what, false);
    assert_eq!(out.status.signal(), Some(libc::SIGSYS), "{out:?}");
    Some(stdout)
}

/// Conversions on a vCPU thread pass its filter with the confidential rules; with the plain
/// vCPU filter `SIGSYS` ends the process.
#[test]
fn conversions_need_and_pass_the_confidential_rules() {
    if let Some(stdout) = passes_only_with_the_rules("child_conversions", "conversions") {
        assert_eq!(stdout.matches("RET attrs=").count(), 2, "{stdout}");
    }
}

/// GetQuote forwarded from a vCPU thread passes its filter with the quote rules only.
#[test]
fn quote_forwarding_needs_and_passes_the_quote_rules() {
    passes_only_with_the_rules("child_quote", "quote");
}

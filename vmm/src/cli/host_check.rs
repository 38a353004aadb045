//! `veil host-check`: what this host offers Veil, as a table or as JSON.
//!
//! Exit status 0 when the report was printed; with `--platform P`, 1 when the host cannot run
//! guests of `P` (every missing piece is named on stderr).

use veil_launch::host::{Feature, HostCapabilities, Platform};

/// Arguments of `veil host-check`.
#[derive(Debug, clap::Args)]
pub struct HostCheckArgs {
    /// Print the facts as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also check that this host can run guests of this platform (none, sev-snp, tdx); exit 1
    /// if it cannot.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<Platform>,
}

/// Runs the subcommand.
pub fn execute(args: HostCheckArgs) -> anyhow::Result<i32> {
    let caps = HostCapabilities::probe();
    if args.json {
        println!("{}", caps.to_json());
    } else {
        print!("{}", table(&caps));
    }
    if let Some(platform) = args.platform {
        if let Err(missing) = caps.check(platform) {
            eprintln!("veil: {missing}");
            return Ok(1);
        }
    }
    Ok(0)
}

/// One row: name, `yes`/`no` or a value, and the detail.
struct Row(String, String, String);

fn feature_row(name: &str, f: &Feature) -> Row {
    let status = if f.available { "yes" } else { "no" };
    Row(name.to_string(), status.to_string(), f.detail.clone())
}

fn value_row<T: std::fmt::Display>(name: &str, v: Option<T>, detail: &str) -> Row {
    let value = v.map_or_else(|| "-".to_string(), |v| v.to_string());
    Row(name.to_string(), value, detail.to_string())
}

/// The human-readable report.
fn table(caps: &HostCapabilities) -> String {
    let kvm = &caps.kvm;
    let mut rows = vec![
        Row("kernel".into(), caps.kernel_release.clone(), String::new()),
        Row(
            "cpu".into(),
            caps.cpu.vendor.clone(),
            format!("{} [{}]", caps.cpu.model, caps.cpu.flags.join(" ")),
        ),
        feature_row("kvm", &kvm.device),
        Row(
            "kvm modules".into(),
            kvm.modules.len().to_string(),
            kvm.modules.join(", "),
        ),
        value_row("kvm api version", kvm.api_version, "KVM_GET_API_VERSION"),
        value_row(
            "recommended vcpus",
            kvm.recommended_vcpus,
            "KVM_CAP_NR_VCPUS",
        ),
        value_row("max vcpus", kvm.max_vcpus, "KVM_CAP_MAX_VCPUS"),
        value_row("memory slots", kvm.memslots, "KVM_CAP_NR_MEMSLOTS"),
    ];
    for t in &kvm.vm_types {
        rows.push(feature_row(
            &format!("vm type {} ({})", t.name, t.id),
            &t.support,
        ));
    }
    rows.extend([
        feature_row("user memory2", &kvm.user_memory2),
        feature_row("guest_memfd", &kvm.guest_memfd),
        feature_row("memory attributes", &kvm.memory_attributes),
        feature_row("exit hypercall", &kvm.exit_hypercall_map_gpa),
        feature_row("sev", &caps.sev.sev),
        feature_row("sev-es", &caps.sev.sev_es),
        feature_row("sev-snp", &caps.sev.sev_snp),
        feature_row("/dev/sev", &caps.sev.dev_sev),
        feature_row("tdx", &caps.tdx.kvm_intel_tdx),
        feature_row("io_uring", &caps.devices.io_uring.support),
        feature_row("/dev/net/tun", &caps.devices.tun),
        feature_row("vhost-net", &caps.devices.vhost_net),
        feature_row("vhost-vsock", &caps.devices.vhost_vsock),
    ]);
    for p in Platform::ALL {
        let f = match caps.check(p) {
            Ok(()) => Feature::present("every requirement met"),
            Err(e) => {
                let whats: Vec<&str> = e.missing.iter().map(|m| m.what.as_str()).collect();
                Feature::absent(format!("missing: {}", whats.join("; ")))
            }
        };
        rows.push(feature_row(&format!("platform {p}"), &f));
    }
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    let mut out = String::new();
    for Row(name, value, detail) in rows {
        let line = format!("{name:<w0$}  {value:<w1$}  {detail}");
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

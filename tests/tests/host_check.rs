//! `veil host-check` reports what this host really has: the development machines and CI have a
//! working `/dev/kvm` offering only the default VM type, no SEV-SNP and no TDX.

use std::process::Command;

fn host_check(args: &[&str]) -> std::process::Output {
    Command::new(veil_tests::bin("veil"))
        .arg("host-check")
        .args(args)
        .output()
        .expect("veil runs")
}

#[test]
fn json_report_matches_this_host() {
    let out = host_check(&["--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let kvm = &json["kvm"];
    assert_eq!(kvm["device"]["available"], true, "{kvm}");
    assert_eq!(kvm["api_version"], 12);
    assert!(kvm["max_vcpus"].as_u64().unwrap() >= 1);
    let types = kvm["vm_types"].as_array().expect("vm_types is a list");
    let by_name = |name: &str| {
        types
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("vm type {name} listed"))
    };
    assert_eq!(by_name("default")["available"], true);
    for absent in ["sev-snp", "tdx"] {
        let t = by_name(absent);
        assert_eq!(t["available"], false, "{t}");
        assert!(
            t["detail"]
                .as_str()
                .unwrap()
                .contains("does not include type"),
            "{t}"
        );
    }
    // SNP and TDX are absent, each with a reason.
    for feature in [
        &json["sev"]["sev_snp"],
        &json["sev"]["dev_sev"],
        &json["tdx"]["kvm_intel_tdx"],
    ] {
        assert_eq!(feature["available"], false, "{feature}");
        assert!(!feature["detail"].as_str().unwrap().is_empty(), "{feature}");
    }
    assert_eq!(json["devices"]["tun"]["available"], true);
    assert_eq!(json["devices"]["io_uring"]["available"], true);
}

#[test]
fn table_names_every_capability() {
    let out = host_check(&[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    for row in [
        "kvm api version",
        "max vcpus",
        "vm type default (0)",
        "vm type sev-snp (4)",
        "vm type tdx (5)",
        "guest_memfd",
        "memory attributes",
        "user memory2",
        "/dev/sev",
        "io_uring",
        "/dev/net/tun",
        "vhost-net",
        "vhost-vsock",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(row)),
            "no `{row}` row in:\n{text}"
        );
    }
    let platform_row = |p: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("platform {p} ")))
            .unwrap_or_else(|| panic!("no platform {p} row"))
            .to_string()
    };
    assert!(platform_row("none").contains(" yes "));
    assert!(platform_row("sev-snp").contains("missing: KVM VM type sev-snp (4)"));
    assert!(platform_row("tdx").contains("missing: KVM VM type tdx (5)"));
}

#[test]
fn platform_check_refuses_snp_and_tdx_naming_what_is_missing() {
    let out = host_check(&["--platform", "none"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for (platform, missing) in [
        ("sev-snp", "/dev/sev: "),
        ("tdx", "TDX enabled in kvm_intel: "),
    ] {
        let out = host_check(&["--platform", platform]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.contains(&format!(
                "this host cannot run `{platform}` guests; missing:"
            )),
            "{err}"
        );
        assert!(err.contains(missing), "{err}");
    }
}

#[test]
fn unknown_platform_is_a_usage_error() {
    let out = host_check(&["--platform", "sev"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown platform `sev`"));
}

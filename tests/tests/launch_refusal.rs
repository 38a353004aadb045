//! Without `--dry-run`, `veil run --platform sev-snp|tdx` on a host that lacks the platform
//! fails before creating anything and names what is missing; `veil host-check --platform`
//! reports the same facts. (On a capable host these tests are skipped with the reason.)

use veil_tests::{OVMF, ovmf_present, veil};

/// `None` when this host can run `platform` (the refusal cannot be tested here).
fn missing_pieces(platform: &str) -> Option<String> {
    let out = veil(&["host-check", "--platform", platform]);
    match out.status {
        Some(0) => {
            eprintln!("skipped: this host can run {platform} guests (veil host-check says so)");
            None
        }
        Some(1) => Some(out.stderr),
        other => panic!("veil host-check --platform {platform} exited {other:?}: {out:#?}"),
    }
}

#[test]
fn snp_and_tdx_are_refused_naming_what_is_missing() {
    for platform in ["sev-snp", "tdx"] {
        let Some(facts) = missing_pieces(platform) else {
            continue;
        };
        // Deliberately a file that does not exist: the host check comes first, so the refusal
        // names the host's gaps, not the payload.
        let out = veil(&[
            "run",
            "--platform",
            platform,
            "--firmware",
            "/nonexistent/OVMF.fd",
        ]);
        out.expect_status(1);
        assert!(
            out.stderr
                .contains(&format!("this host cannot run `{platform}` guests")),
            "{out:#?}"
        );
        assert!(out.stderr.contains("nothing was created"), "{out:#?}");
        assert!(!out.stderr.contains("/nonexistent"), "{out:#?}");
        // Every missing piece host-check lists is named by the refusal too.
        for line in facts.lines().filter(|l| l.trim_start().starts_with("- ")) {
            let what = line.trim_start().trim_start_matches("- ");
            let what = what.split(':').next().unwrap_or(what);
            assert!(out.stderr.contains(what), "{what:?} missing from {out:#?}");
        }
    }
}

#[test]
fn the_refusal_happens_with_a_real_payload_too() {
    let Some(_) = missing_pieces("sev-snp") else {
        return;
    };
    if !ovmf_present() {
        return;
    }
    let out = veil(&[
        "run",
        "--platform",
        "sev-snp",
        "--firmware",
        OVMF,
        "--cpus",
        "2",
    ]);
    out.expect_status(1);
    assert!(out.stderr.contains("KVM VM type sev-snp (4)") || out.stderr.contains("/dev/sev"));
    assert!(out.stdout.is_empty(), "{out:#?}");
}

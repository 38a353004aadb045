//! `veil id-block` output checked independently: the ID block and key digests agree with
//! sev-snp-measure's `snp_calc_id_block` for the same keys and measurement, and both ECDSA
//! signatures in the ID auth block verify with Python's `cryptography` and with Veil's verifier.

use std::path::Path;
use std::process::Command;

fn python_has_sevsnpmeasure() -> bool {
    Command::new("python3")
        .args(["-c", "import sevsnpmeasure.id_block, cryptography"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn gen_key(path: &Path, pkcs8: bool) {
    let ok = if pkcs8 {
        Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-384",
                "-out",
            ])
            .arg(path)
            .status()
    } else {
        Command::new("openssl")
            .args(["ecparam", "-genkey", "-name", "secp384r1", "-noout", "-out"])
            .arg(path)
            .status()
    };
    assert!(ok.unwrap().success(), "openssl could not make a key");
}

const MEASUREMENT: &str = "80479ca85a2b182c026f6a3a2f2b180ab968d84b17540dd30de39039e70b8c0c33ead2cae6d34e37750035fcff60bfc8";

const PY_CHECK: &str = r#"
import base64, sys, hashlib
from sevsnpmeasure import id_block as ib
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.hazmat.primitives import hashes
ld = bytes.fromhex(sys.argv[1])
out = ib.snp_calc_id_block(ld, sys.argv[2], sys.argv[3]).splitlines()
ref_block = base64.b64decode(out[0].split(',')[0].split('=', 1)[1])
id_hash = base64.b64decode(out[1].split(': ')[1])
author_hash = base64.b64decode(out[2].split(': ')[1])
veil = dict(kv.split('=', 1) for kv in sys.argv[4].split(','))
block = base64.b64decode(veil['id-block'])
auth = base64.b64decode(veil['id-auth'])
assert block == ref_block, "ID block differs from sev-snp-measure's"
assert len(auth) == 4096
def pub(b):
    assert int.from_bytes(b[0:4], 'little') == 2
    x = int.from_bytes(b[4:76], 'little'); y = int.from_bytes(b[76:148], 'little')
    return ec.EllipticCurvePublicNumbers(x, y, ec.SECP384R1()).public_key()
def sig(b):
    return utils.encode_dss_signature(int.from_bytes(b[0:72], 'little'), int.from_bytes(b[72:144], 'little'))
id_pub = auth[0x240:0x240+0x404]; author_pub = auth[0x880:0x880+0x404]
pub(id_pub).verify(sig(auth[0x40:]), block, ec.ECDSA(hashes.SHA384()))
pub(author_pub).verify(sig(auth[0x680:]), id_pub, ec.ECDSA(hashes.SHA384()))
assert hashlib.sha384(id_pub).digest() == id_hash, "ID key digest differs"
assert hashlib.sha384(author_pub).digest() == author_hash, "author key digest differs"
print("verified")
"#;

#[test]
fn id_block_agrees_with_sev_snp_measure_and_signatures_verify_independently() {
    if !python_has_sevsnpmeasure() || !veil_tests::have_tool("openssl") {
        eprintln!("skipped: needs python3 with sev-snp-measure and cryptography, and openssl");
        return;
    }
    let dir = veil_tests::scratch_dir("id-block");
    let (id_key, author_key) = (dir.join("id.pem"), dir.join("author.pem"));
    gen_key(&id_key, false);
    gen_key(&author_key, true);
    let out = Command::new(veil_tests::bin("veil"))
        .args(["id-block", "--measurement", MEASUREMENT, "--id-key"])
        .arg(&id_key)
        .arg("--author-key")
        .arg(&author_key)
        .arg("--out-dir")
        .arg(&dir)
        .output()
        .unwrap();
    veil_tests::assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let qemu = stdout.lines().next().unwrap().to_string();
    assert!(qemu.starts_with("id-block=") && qemu.contains(",id-auth="));
    let check = Command::new("python3")
        .args(["-c", PY_CHECK, MEASUREMENT])
        .arg(&id_key)
        .arg(&author_key)
        .arg(&qemu)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "independent check failed: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    // The raw blocks written for SNP_LAUNCH_FINISH verify with Veil's own verifier too, and a
    // flipped policy bit is caught.
    let block = std::fs::read(dir.join("id_block.bin")).unwrap();
    let auth = std::fs::read(dir.join("id_auth.bin")).unwrap();
    let v = veil_firmware::id_block::verify(&block, &auth).unwrap();
    assert!(v.author_key_digest.is_some());
    let mut bad = block.clone();
    bad[0x58] ^= 0x01;
    assert!(veil_firmware::id_block::verify(&bad, &auth).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn id_block_rejects_a_bad_key_file_naming_it() {
    let dir = veil_tests::scratch_dir("id-block-bad");
    let key = dir.join("not-a-key.pem");
    std::fs::write(
        &key,
        "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
    )
    .unwrap();
    let out = Command::new(veil_tests::bin("veil"))
        .args(["id-block", "--measurement", MEASUREMENT, "--id-key"])
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not-a-key.pem") && err.contains("P-384"),
        "stderr: {err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

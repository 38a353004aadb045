//! `veil id-block`: build an SNP ID block and ID auth block for a measurement and policy.

use std::path::PathBuf;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use veil_firmware::id_block::{self, IdBlockInput};

/// Arguments of `veil id-block`.
#[derive(Debug, clap::Args)]
pub struct IdBlockArgs {
    /// Expected launch digest: 96 hex digits or base64 of 48 bytes (`veil measure` prints it).
    #[arg(long)]
    pub measurement: String,
    /// Guest policy (QEMU's default is 0x30000).
    #[arg(long, default_value = "0x30000")]
    pub policy: String,
    /// ID key: EC P-384 private key in PEM.
    #[arg(long)]
    pub id_key: PathBuf,
    /// Author key: EC P-384 private key in PEM (optional).
    #[arg(long)]
    pub author_key: Option<PathBuf>,
    /// Family ID, 32 hex digits (default zero).
    #[arg(long)]
    pub family_id: Option<String>,
    /// Image ID, 32 hex digits (default zero).
    #[arg(long)]
    pub image_id: Option<String>,
    /// Guest SVN.
    #[arg(long, default_value_t = 0)]
    pub guest_svn: u32,
    /// Write the raw blocks (the form SNP_LAUNCH_FINISH takes) to DIR/id_block.bin and
    /// DIR/id_auth.bin.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Print a JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

fn hex_bytes<const N: usize>(s: &str, what: &str) -> anyhow::Result<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{what} must be {} hex digits, got {s:?}", 2 * N);
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).context("hex digit")?;
    }
    Ok(out)
}

fn measurement(s: &str) -> anyhow::Result<[u8; 48]> {
    if s.len() == 96 {
        return hex_bytes::<48>(s, "--measurement");
    }
    let b = B64
        .decode(s)
        .with_context(|| format!("--measurement {s:?} is neither 96 hex digits nor base64"))?;
    b.try_into().map_err(|b: Vec<u8>| {
        anyhow::anyhow!("--measurement decodes to {} bytes, expected 48", b.len())
    })
}

fn load_key(path: &PathBuf, what: &'static str) -> anyhow::Result<p384::ecdsa::SigningKey> {
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("{what} key {}", path.display()))?;
    id_block::signing_key_from_pem(&pem, what)
        .with_context(|| format!("{what} key {}", path.display()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs the subcommand.
pub fn execute(args: IdBlockArgs) -> anyhow::Result<i32> {
    let policy = match args.policy.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => args.policy.parse(),
    }
    .with_context(|| format!("--policy {:?} is not a number", args.policy))?;
    let input = IdBlockInput {
        measurement: measurement(&args.measurement)?,
        family_id: match &args.family_id {
            Some(s) => hex_bytes::<16>(s, "--family-id")?,
            None => [0; 16],
        },
        image_id: match &args.image_id {
            Some(s) => hex_bytes::<16>(s, "--image-id")?,
            None => [0; 16],
        },
        version: 1,
        guest_svn: args.guest_svn,
        policy,
    };
    let id_key = load_key(&args.id_key, "ID")?;
    let author = args
        .author_key
        .as_ref()
        .map(|p| load_key(p, "author"))
        .transpose()?;
    let (block, auth) = id_block::build(&input, &id_key, author.as_ref());
    // Check what we produced before handing it out.
    let verified = id_block::verify(&block, &auth[..]).context("self-check of the ID block")?;
    if let Some(dir) = &args.out_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
        for (name, bytes) in [("id_block.bin", &block[..]), ("id_auth.bin", &auth[..])] {
            let p = dir.join(name);
            std::fs::write(&p, bytes).with_context(|| format!("{}", p.display()))?;
        }
    }
    let qemu = format!(
        "id-block={},id-auth={}",
        B64.encode(block),
        B64.encode(&auth[..])
    );
    if args.json {
        let out = serde_json::json!({
            "id_block": B64.encode(block),
            "id_auth": B64.encode(&auth[..]),
            "qemu": qemu,
            "author_key_enabled": verified.author_key_digest.is_some(),
            "id_key_digest": hex(&verified.id_key_digest),
            "author_key_digest": verified.author_key_digest.map(|d| hex(&d)),
            "policy": format!("{policy:#x}"),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{qemu}");
        println!("id_key_digest: {}", hex(&verified.id_key_digest));
        if let Some(d) = verified.author_key_digest {
            println!("author_key_digest: {}", hex(&d));
        }
    }
    Ok(0)
}

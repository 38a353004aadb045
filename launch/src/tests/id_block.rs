//! The SNP model checks the ID block at LAUNCH_FINISH as the firmware does.

use veil_firmware::Platform;
use veil_firmware::id_block::{self, IdBlockInput};
use veil_firmware::measure;
use veil_firmware::plan::IdBlockPair;

use super::ovmf_plan;
use crate::error::LaunchError;
use crate::platform::Rule;
use crate::snp::launch::{SnpOptions, launch};
use crate::snp::model::{SnpModel, SnpModelConfig};

/// A P-384 key made for these tests only.
const TEST_KEY: &str = "-----BEGIN EC PRIVATE KEY-----
MIGkAgEBBDB+sXQLS3xwZVHy5t3M1BZpwQAZ5elzhbBKNmodir8Vugpex7XzuKg9
t7QIxMkUx3igBwYFK4EEACKhZANiAAT6EE0M2CQ/AvdW3cSnyAgfboRwGhFVyrlw
aRwYBnRvr7Y2DNx39wZjpRAcwOfMl3eeUsEfjG5OqjYGpHNgRLGBBeSqQV2DHgKH
bEH4HaZvvAqnfvrgWAMvfaFfOacJLBc=
-----END EC PRIVATE KEY-----
";

fn pair(measurement: [u8; 48], policy: u64) -> IdBlockPair {
    let key = id_block::signing_key_from_pem(TEST_KEY, "ID").expect("the test key parses");
    let input = IdBlockInput {
        measurement,
        family_id: [1; 16],
        image_id: [2; 16],
        version: 1,
        guest_svn: 0,
        policy,
    };
    let (block, auth) = id_block::build(&input, &key, None);
    IdBlockPair {
        id_block: block.to_vec(),
        id_auth: auth.to_vec(),
        author_key_enabled: false,
    }
}

fn finish_error(plan: &veil_firmware::LaunchPlan) -> crate::platform::CommandError {
    let mut m = SnpModel::new(SnpModelConfig::default());
    match launch(&mut m, plan, &SnpOptions::default()) {
        Err(LaunchError::Command(e)) => {
            assert!(m.launch_digest().is_none());
            e
        }
        other => panic!("expected a refused LAUNCH_FINISH, got {other:?}"),
    }
}

#[test]
fn a_matching_id_block_finishes_and_a_wrong_one_is_refused() {
    let Some(mut plan) = ovmf_plan(Platform::SevSnp, 2, 1) else {
        return;
    };
    let digest = measure::digest(&plan, None).unwrap();
    plan.id_block = Some(pair(digest, 0x30000));
    let mut m = SnpModel::new(SnpModelConfig::default());
    launch(&mut m, &plan, &SnpOptions::default()).unwrap();
    assert_eq!(m.launch_digest(), Some(digest));
    assert!(m.log().last().unwrap().contains("id_block_en=1"));

    let mut wrong = digest;
    wrong[0] ^= 1;
    plan.id_block = Some(pair(wrong, 0x30000));
    let e = finish_error(&plan);
    assert_eq!((e.rule, e.fw_error), (Some(Rule::IdBlock), Some(0x0b)));
    assert!(e.to_string().contains("BAD_MEASUREMENT"), "{e}");

    plan.id_block = Some(pair(digest, 0x30000 | (1 << 19)));
    let e = finish_error(&plan);
    assert_eq!((e.rule, e.fw_error), (Some(Rule::IdBlock), Some(0x07)));

    let mut tampered = pair(digest, 0x30000);
    tampered.id_auth[0x40] ^= 1;
    plan.id_block = Some(tampered);
    let e = finish_error(&plan);
    assert_eq!((e.rule, e.fw_error), (Some(Rule::IdBlock), Some(0x0a)));
}

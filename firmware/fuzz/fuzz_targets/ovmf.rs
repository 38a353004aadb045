//! OVMF footer table, SEV and TDVF metadata parsing, planning and measurement on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    veil_firmware::fuzzing::ovmf(data);
});

//! Fuzz target `projection_toml`: its body and property are `annals_fuzz::projection_toml`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    annals_fuzz_targets::init();
    if let Err(violation) = annals_fuzz::projection_toml(data) {
        panic!("{violation}");
    }
});

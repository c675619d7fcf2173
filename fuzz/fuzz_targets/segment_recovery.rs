//! Fuzz target `segment_recovery`: its body and property are `annals_fuzz::segment_recovery`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    annals_fuzz_targets::init();
    if let Err(violation) = annals_fuzz::segment_recovery(data) {
        panic!("{violation}");
    }
});

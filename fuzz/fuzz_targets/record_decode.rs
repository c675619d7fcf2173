//! Fuzz target `record_decode`: its body and property are `annals_fuzz::record_decode`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    annals_fuzz_targets::init();
    if let Err(violation) = annals_fuzz::record_decode(data) {
        panic!("{violation}");
    }
});

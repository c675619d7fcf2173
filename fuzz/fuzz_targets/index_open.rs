//! Fuzz target `index_open`: its body and property are `annals_fuzz::index_open`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    annals_fuzz_targets::init();
    if let Err(violation) = annals_fuzz::index_open(data) {
        panic!("{violation}");
    }
});

//! Fuzz target `http_body`: its body and property are `annals_fuzz::http_body`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    annals_fuzz_targets::init();
    if let Err(violation) = annals_fuzz::http_body(data) {
        panic!("{violation}");
    }
});

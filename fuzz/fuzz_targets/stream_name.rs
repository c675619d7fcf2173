//! Fuzz target `stream_name`: its body and property are `annals_fuzz::stream_name`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    annals_fuzz_targets::init();
    if let Err(violation) = annals_fuzz::stream_name(data) {
        panic!("{violation}");
    }
});

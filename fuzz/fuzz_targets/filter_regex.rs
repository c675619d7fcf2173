//! Fuzz target `filter_regex`: its body and property are `annals_fuzz::filter_regex`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    annals_fuzz_targets::init();
    if let Err(violation) = annals_fuzz::filter_regex(data) {
        panic!("{violation}");
    }
});

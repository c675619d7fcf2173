//! Fuzz target `grpc_request`: its body and property are `annals_fuzz::grpc_request`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    annals_fuzz_targets::init();
    if let Err(violation) = annals_fuzz::grpc_request(data) {
        panic!("{violation}");
    }
});

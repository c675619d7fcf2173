//! What every fuzz target shares: the panic hook. libFuzzer's hook aborts on any panic; this one
//! lets the panics `annals-index` catches on purpose (redb's, on a damaged index file) unwind to
//! their `catch_unwind`, and aborts on every other.

use std::sync::Once;

/// Installs the hook once, over libFuzzer's.
pub fn init() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !annals_fuzz::panic_is_tolerated(info) {
                abort(info);
            }
        }));
    });
}

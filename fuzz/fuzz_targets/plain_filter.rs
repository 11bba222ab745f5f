//! The plain-SQL filter over any bytes, fed in pieces of fuzzer-chosen sizes: it must
//! not panic, the pieces must not change what comes out, and what comes out must be
//! what the old whole-line filter (the oracle in `src/lib.rs`) gave.
#![no_main]

use countable_fuzz::plain::{filter_bytes, Filter, FilterOptions, HOLD};
use countable_fuzz::reference::reference_filter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, dump)) = data.split_first() else {
        return;
    };
    let opts = FilterOptions {
        strip_restrict: knobs & 1 != 0,
        strip_transaction_timeout: knobs & 2 != 0,
    };
    let (whole, stats) = filter_bytes(dump, opts);
    // Pieces: sizes 1..=32 from the knobs, cycling, so a line is cut everywhere.
    let size = usize::from(knobs >> 2) % 32 + 1;
    let mut pieces = Vec::new();
    let mut f = Filter::new(opts);
    for piece in dump.chunks(size) {
        if !f.feed(piece, &mut pieces) {
            break;
        }
    }
    assert_eq!(
        f.finish(&mut pieces),
        stats,
        "pieces of {size} changed the stats"
    );
    assert!(pieces == whole, "pieces of {size} changed the output");
    if dump.split(|b| *b == b'\n').all(|l| l.len() < HOLD) {
        let (old, old_stats) = reference_filter(dump, opts);
        assert_eq!(stats, old_stats, "stats differ from the whole-line filter");
        assert!(whole == old, "output differs from the whole-line filter");
    }
});

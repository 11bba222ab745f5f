//! The plain-SQL filter over any bytes, fed in pieces of fuzzer-chosen sizes, with its
//! real hold and with a short one (so long lines are reached): it must not panic, the
//! pieces must not change what comes out, and what comes out must be what the
//! whole-line oracle (`src/reference.rs`) gives.
#![no_main]

use countable_fuzz::plain::{Filter, FilterOptions, HOLD, MIN_HOLD};
use countable_fuzz::reference::reference_filter;
use libfuzzer_sys::fuzz_target;

fn run(dump: &[u8], opts: FilterOptions, hold: usize, size: usize) {
    let mut whole = Vec::new();
    let mut f = Filter::with_hold(opts, hold);
    f.feed(dump, &mut whole);
    let stats = f.finish(&mut whole);
    let mut pieces = Vec::new();
    let mut f = Filter::with_hold(opts, hold);
    for piece in dump.chunks(size) {
        if !f.feed(piece, &mut pieces) {
            break;
        }
    }
    let piece_stats = f.finish(&mut pieces);
    assert_eq!(
        piece_stats, stats,
        "hold {hold}: pieces of {size} changed the stats"
    );
    assert!(
        pieces == whole,
        "hold {hold}: pieces of {size} changed the output"
    );
    let (want, want_stats) = reference_filter(dump, opts, hold);
    assert_eq!(
        stats, want_stats,
        "hold {hold}: stats differ from the oracle"
    );
    assert!(whole == want, "hold {hold}: output differs from the oracle");
}

fuzz_target!(|data: &[u8]| {
    let [knobs, short, dump @ ..] = data else {
        return;
    };
    let opts = FilterOptions {
        strip_restrict: knobs & 1 != 0,
        strip_transaction_timeout: knobs & 2 != 0,
    };
    // Pieces of 1..=64 bytes, so a line is cut anywhere.
    let size = usize::from(knobs >> 2) + 1;
    run(dump, opts, HOLD, size);
    run(dump, opts, MIN_HOLD + usize::from(*short), size);
});

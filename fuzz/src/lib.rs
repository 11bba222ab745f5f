//! What the fuzz targets fuzz: countable's own source files for the plain-SQL filter,
//! the plain dump's header and the archive sniffers, compiled as they are (they are
//! plain std, no I/O), plus the oracle in `reference`.

/// `countable::restore::plain`'s pure parts.
#[path = "../../src/restore/plain"]
pub mod plain {
    #[path = "filter.rs"]
    mod filter;
    #[path = "header.rs"]
    mod header;
    #[path = "quotes.rs"]
    mod quotes;

    pub use filter::{filter_bytes, Filter, FilterOptions, Stats, HOLD, MIN_HOLD, TRAILER};
    pub use header::{inspect, psql_knows_restrict, Header};
}

/// `countable::archive`'s sniffers.
#[path = "../../src/archive"]
pub mod archive {
    #[path = "sniff.rs"]
    mod sniff;

    pub use sniff::*;
}

pub mod reference;

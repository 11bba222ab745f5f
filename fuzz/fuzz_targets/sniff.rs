//! The format sniffers over any bytes: compression magic, dump kind, tar headers (the
//! `tar` crate over a peeked head), zip, and the plain dump's header facts. None may
//! panic, and their answers must agree with each other.
#![no_main]

use countable_fuzz::archive::{self, Compression, DumpKind};
use countable_fuzz::plain;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|head: &[u8]| {
    if let Some(c) = Compression::sniff(head) {
        assert!(!c.name().is_empty());
        assert!(!archive::is_zip(head));
    }
    if let Some(kind) = archive::sniff_dump(head) {
        assert!(matches!(kind, DumpKind::Plain | DumpKind::Custom));
    }
    let name = archive::first_tar_file_name(head);
    let kind = archive::pg_dump_tar_kind(head);
    assert!(
        kind.is_none() || name.is_some(),
        "a tar kind without a file"
    );
    assert!(matches!(
        kind,
        None | Some(DumpKind::Tar | DumpKind::Directory)
    ));
    let _ = archive::is_tar(head);
    let mut extensions = plain::inspect(head).extensions;
    let listed = extensions.len();
    extensions.sort();
    extensions.dedup();
    assert_eq!(extensions.len(), listed, "an extension listed twice");
});

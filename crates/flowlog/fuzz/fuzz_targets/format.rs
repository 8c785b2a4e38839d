//! A format that parses renders to a header and a `${...}` string that parse back equal.
#![no_main]

use flowlog::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(f) = Format::parse(s) {
        assert_eq!(Format::parse(&f.to_string()).as_ref(), Ok(&f));
        assert_eq!(Format::parse(&f.to_log_format()).as_ref(), Ok(&f));
    }
});

//! The fast line parser agrees with the naive one on any bytes (the same fields, the same values,
//! the same first error: damaged values included), under a format of 1..16 fields: known (typed)
//! fields from anywhere in the list, or unknown (free-text) ones.
#![no_main]

use flowlog::naive::{naive_addr, naive_split, naive_u64};
use flowlog::{parse_addr, parse_u64, Field, Format, LineParser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, line)) = data.split_first() else { return };
    let Some((&first, line)) = line.split_first() else { return };
    let n = usize::from(n % 16) + 1;
    let known = Field::KNOWN.len();
    let names: Vec<String> = (0..n)
        .map(|i| match usize::from(first) {
            k if k < known => Field::KNOWN[(k + i) % known].to_string(),
            _ => format!("f{i}"),
        })
        .collect();
    let format = Format::parse(&names.join(" ")).expect("valid format");
    let mut p = LineParser::new();
    let fast = p.parse(line, &format, 1, 4096);
    let naive = naive_split(line, &format, 4096);
    match (&fast, &naive) {
        (Ok(rec), Ok(vals)) => {
            for (i, v) in vals.iter().enumerate() {
                let got = rec.value_at(i).expect("field present");
                assert_eq!(got, v.as_bytes());
                assert_eq!(parse_u64(got), naive_u64(v));
                assert_eq!(parse_addr(got), naive_addr(v));
            }
        }
        (Err(e), Err(k)) => assert_eq!(&e.kind, k),
        _ => panic!("fast {:?} vs naive {:?}", fast.map(|_| ()), naive),
    }
});

//! Properties: rendered lines parse back equal; the fast parser agrees with the naive one;
//! arbitrary bytes through every framing never panic.

use flowlog::naive::{naive_addr, naive_split, naive_u64};
use flowlog::{
    for_each_record, DecodeOptions, Field, FieldKind, FlowRecord, Format, Framing, LineError,
    LineParser, RecordSink, ValueType,
};
use proptest::prelude::*;

fn value_for(t: ValueType) -> BoxedStrategy<String> {
    let any_of = |words: &'static [&'static str]| {
        prop_oneof![4 => prop::sample::select(words).prop_map(str::to_string), 1 => Just("-".to_string())]
            .boxed()
    };
    match t {
        ValueType::U8 => {
            prop_oneof![any::<u8>().prop_map(|v| v.to_string()), Just("-".to_string())].boxed()
        }
        ValueType::U16 => prop_oneof![
            any::<u16>().prop_map(|v| v.to_string()),
            (0u16..300).prop_map(|v| format!("00{v}")),
            Just("-".to_string()),
        ]
        .boxed(),
        ValueType::U64 => prop_oneof![
            any::<u64>().prop_map(|v| v.to_string()),
            (0u64..70000).prop_map(|v| v.to_string()),
            Just("-".to_string()),
        ]
        .boxed(),
        ValueType::Addr => prop_oneof![
            any::<[u8; 4]>().prop_map(|o| std::net::Ipv4Addr::from(o).to_string()),
            any::<u128>().prop_map(|v| std::net::Ipv6Addr::from(v).to_string()),
            Just("-".to_string()),
        ]
        .boxed(),
        ValueType::Action => any_of(&["ACCEPT", "REJECT"]),
        ValueType::LogStatus => any_of(&["OK", "NODATA", "SKIPDATA"]),
        ValueType::FlowDirection => any_of(&["ingress", "egress"]),
        ValueType::Text => "[a-zA-Z0-9:/._-]{1,24}".boxed(),
    }
}

fn format_strategy() -> impl Strategy<Value = Format> {
    prop::sample::subsequence(Field::KNOWN.to_vec(), 1..Field::KNOWN.len())
        .prop_shuffle()
        .prop_map(|fields| Format::from_fields(&fields).unwrap())
}

fn format_and_values() -> impl Strategy<Value = (Format, Vec<String>)> {
    format_strategy().prop_flat_map(|f| {
        let vals: Vec<_> = f.fields().iter().map(|x| value_for(x.value_type())).collect();
        (Just(f), vals)
    })
}

struct Nothing;
impl RecordSink for Nothing {
    fn record(&mut self, rec: &FlowRecord<'_>) {
        // Whatever the input, a record's values are all of their types.
        for (field, value) in rec.fields() {
            if let Some(v) = value {
                assert!(field.value_type().accepts(v), "{field}: {v:?}");
            }
        }
        assert!(rec.srcaddr().is_ok() && rec.start().is_ok() && rec.action().is_ok());
        // The values the decoder kept are those the parsers give from the bytes.
        for f in [Field::SrcAddr, Field::DstAddr, Field::PktSrcAddr, Field::PktDstAddr] {
            assert_eq!(rec.addr_field(f), Ok(rec.raw(f).and_then(flowlog::parse_addr)), "{f}");
        }
        let action = rec.raw(Field::Action).and_then(flowlog::Action::from_bytes);
        assert_eq!(rec.action(), Ok(action));
        let status = rec.raw(Field::LogStatus).and_then(flowlog::LogStatus::from_bytes);
        assert_eq!(rec.log_status(), Ok(status));
        assert!(rec.log_status().is_ok() && rec.bytes().is_ok());
        let mut out = Vec::new();
        flowlog::write_json(rec, &mut out);
    }
    fn malformed(&mut self, _: &LineError) {}
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn render_then_parse_round_trips((format, values) in format_and_values()) {
        let line = values.join(" ");
        let mut p = LineParser::new();
        let rec = p.parse(line.as_bytes(), &format, 1, 1 << 16).unwrap();
        for (i, (field, v)) in format.fields().iter().zip(&values).enumerate() {
            prop_assert_eq!(rec.value_at(i), Some(v.as_bytes()));
            let expect_raw = if v == "-" { None } else { Some(v.as_bytes()) };
            prop_assert_eq!(rec.raw(*field), expect_raw);
            match field.kind() {
                FieldKind::Uint => prop_assert_eq!(rec.u64_field(*field).unwrap(), naive_u64(v)),
                FieldKind::Addr => prop_assert_eq!(rec.addr_field(*field).unwrap(), naive_addr(v)),
                FieldKind::Text => {}
            }
        }
        // Header + line through for_each_record with the format from the header.
        let input = format!("{format}\n{line}\n");
        let mut sink = Nothing;
        let s = for_each_record(input.as_bytes(), &DecodeOptions::default(), &mut sink).unwrap();
        prop_assert_eq!((s.records, s.headers, s.malformed), (1, 1, 0));
        // Format display parses back to the same format.
        prop_assert_eq!(Format::parse(&format.to_string()).unwrap(), format.clone());
        prop_assert_eq!(Format::parse(&format.to_log_format()).unwrap(), format);
    }

    /// Under formats of known (typed) fields, a run of them starting anywhere in the list, or of
    /// unknown (free-text) ones.
    #[test]
    fn fast_agrees_with_naive(
        tokens in prop::collection::vec(
            prop_oneof![
                "[0-9]{1,22}", "[0-9]{1,3}", "[0-9.]{1,16}", "[0-9a-f:]{1,20}", "-", "", "[ -~]{0,6}",
                "\\PC{0,3}", Just("\u{0}".to_string()), Just("\r".to_string()),
                Just("\u{7f}".to_string()),
                prop::sample::select(&["ACCEPT", "REJECT", "OK", "NODATA", "SKIPDATA", "egress", "ingress", "REJECTED"][..])
                    .prop_map(str::to_string),
                prop::sample::select(BAD_VALUES).prop_map(str::to_string),
            ],
            0..20,
        ),
        n in 1usize..16,
        first in prop_oneof![Just(None), (0..Field::KNOWN.len()).prop_map(Some)],
        max in prop_oneof![Just(1usize << 16), 0usize..64],
    ) {
        let line = tokens.join(" ");
        let names: Vec<String> = (0..n)
            .map(|i| match first {
                Some(k) => Field::KNOWN[(k + i) % Field::KNOWN.len()].to_string(),
                None => format!("f{i}"),
            })
            .collect();
        let format = Format::parse(&names.join(" ")).unwrap();
        let mut p = LineParser::new();
        let fast = p.parse(line.as_bytes(), &format, 1, max);
        let naive = naive_split(line.as_bytes(), &format, max);
        match (&fast, &naive) {
            (Ok(rec), Ok(vals)) => {
                for (i, v) in vals.iter().enumerate() {
                    let got = rec.value_at(i).unwrap();
                    prop_assert_eq!(got, v.as_bytes());
                    prop_assert_eq!(flowlog::parse_u64(got), naive_u64(v));
                    prop_assert_eq!(flowlog::parse_addr(got), naive_addr(v));
                }
            }
            (Err(e), Err(k)) => prop_assert_eq!(&e.kind, k),
            _ => prop_assert!(false, "fast {:?} naive {:?} on {:?}", fast.map(|_| ()), naive, line),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512), prefix in 0usize..6) {
        let prefixes: [&[u8]; 6] = [b"", b"\x1f\x8b", b"PAR1", b"\xf3\x89\x9a\xc2", b"{", b"version srcaddr\n"];
        let mut input = prefixes[prefix].to_vec();
        input.extend_from_slice(&data);
        for framing in Framing::ALL {
            let opts = DecodeOptions { framing, max_decompressed_bytes: 1 << 20, ..DecodeOptions::default() };
            let _ = for_each_record(&input, &opts, &mut Nothing);
        }
    }

    #[test]
    fn kpl_of_random_records_never_panics(records in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..5)) {
        let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        let kpl = flowlog::encode_kpl(&refs);
        let _ = for_each_record(&kpl, &DecodeOptions::default(), &mut Nothing);
    }
}

/// A header of eight numeric fields.
const LONG_RUN: &str = "packets bytes start end packets-lost-no-route packets-lost-blackhole \
                        packets-lost-mtu-exceeded packets-lost-ttl-expired";

/// Values that no typed field takes (#28 item 3), among them some that every type but free text
/// refuses: a letter in a number, an octet past 255, a sign, 2^64 and more, empty, non-ASCII.
const BAD_VALUES: &[&str] = &[
    "44x3",
    "10.0.0.999",
    "-1",
    "1-",
    "--",
    "99999999999999999999",
    "18446744073709551616",
    "",
    "\u{e9}",
    "4\u{664}",
    "65536",
    "256",
    "+1",
    "1.2.3",
    "01.2.3.4",
    "REJECTED",
];

/// Values at the edges of what their types take: the largest of each width, leading zeros, IPv6.
const GOOD_VALUES: &[&str] = &[
    "255",
    "65535",
    "18446744073709551615",
    "0000000000000000000000042",
    "00080",
    "000080",
    "2001:db8::1",
    "::ffff:1.2.3.4",
    "255.255.255.255",
    "0.0.0.0",
];

/// What a decoder reported, line by line: `Ok((line, values))` for a record, `Err((line, error))`.
type Outcomes = Vec<Result<(u64, Vec<Vec<u8>>), (u64, String)>>;

struct Collect(Outcomes);
impl RecordSink for Collect {
    fn record(&mut self, rec: &FlowRecord<'_>) {
        let values = (0..rec.len()).map(|i| rec.value_at(i).unwrap_or_default().to_vec()).collect();
        self.0.push(Ok((rec.line_number(), values)));
    }
    fn malformed(&mut self, e: &LineError) {
        self.0.push(Err((e.line, e.kind.to_string())));
    }
}

/// The text decoder line by line, as it was before the structural scan: cut at `\n`, strip `\r`,
/// skip blank lines, take header lines, parse the rest with `LineParser`.
fn line_by_line(text: &[u8], max: usize) -> Outcomes {
    let mut out = Vec::new();
    let mut format = Format::default_v2();
    let mut parser = LineParser::new();
    let mut pieces: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
    if pieces.last().is_some_and(|l| l.is_empty()) {
        pieces.pop();
    }
    for (i, line) in pieces.into_iter().enumerate() {
        let n = i as u64 + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(|b| *b == b' ' || *b == b'\t') {
            continue;
        }
        let first = &line[..line.iter().position(|b| *b == b' ').unwrap_or(line.len())];
        let is_header = std::str::from_utf8(first)
            .ok()
            .filter(|t| t.starts_with(|c: char| c.is_ascii_lowercase() || c == '$'))
            .and_then(Field::from_any_name)
            .is_some();
        if is_header {
            match std::str::from_utf8(line).ok().and_then(|s| Format::parse(s).ok()) {
                Some(f) => format = f,
                None => out.push(Err((n, "bad header line".to_string()))),
            }
            continue;
        }
        match parser.parse(line, &format, n, max) {
            Ok(rec) => out.push(Ok((
                n,
                (0..rec.len()).map(|i| rec.value_at(i).unwrap_or_default().to_vec()).collect(),
            ))),
            Err(e) => out.push(Err((n, e.kind.to_string()))),
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The block decoder (structural scan, fast path) reports exactly what parsing line by line
    /// does, on text mixing good and damaged lines, headers, blank lines, CRLF and junk bytes.
    #[test]
    fn text_decoder_agrees_with_line_by_line(
        lines in prop::collection::vec(
            prop_oneof![
                4 => Just("2 123 eni-1 10.0.0.1 8.8.8.8 1 53 17 1 60 1700000000 1700000060 REJECT OK".to_string()),
                2 => prop::collection::vec(prop_oneof!["[0-9]{1,12}", "[a-z-]{1,8}", "-", ""], 1..18)
                    .prop_map(|t| t.join(" ")),
                1 => Just("version srcaddr dstaddr action log-status start".to_string()),
                1 => Just("5 10.0.0.9 1.2.3.4 REJECT OK 7200".to_string()),
                1 => Just("version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status".to_string()),
                1 => Just("interface-id bogus".to_string()),
                // Eight numeric fields in a row (a run longer than one 64-byte window), and lines
                // for it with values long and short, absent and damaged.
                1 => Just(LONG_RUN.to_string()),
                2 => prop::collection::vec(
                    prop_oneof![
                        4 => "[0-9]{1,14}",
                        1 => Just("-".to_string()),
                        1 => prop::sample::select(BAD_VALUES).prop_map(str::to_string),
                    ],
                    8,
                )
                .prop_map(|t| t.join(" ")),
                // A good line with one value damaged (or replaced by a valid one).
                3 => (0usize..14, prop_oneof![
                    "[ -~]{0,5}", "[0-9]{1,21}", "[0-9.]{7,16}", Just("-".to_string()),
                    prop::sample::select(BAD_VALUES).prop_map(str::to_string),
                    prop::sample::select(GOOD_VALUES).prop_map(str::to_string),
                ])
                    .prop_map(|(i, v)| {
                        let mut t: Vec<String> = "2 123 eni-1 10.0.0.1 8.8.8.8 1 53 17 1 60 1700000000 1700000060 REJECT OK"
                            .split(' ').map(str::to_string).collect();
                        t[i] = v;
                        t.join(" ")
                    }),
                1 => prop_oneof![Just(String::new()), Just("   ".to_string()), Just(" \t ".to_string()), Just(" 1 2".to_string())],
                1 => "[ -~\r\t\u{0}\u{7f}\u{e9}]{0,140}",
            ],
            0..40,
        ),
        crlf in any::<bool>(),
        trailing_newline in any::<bool>(),
        max in prop_oneof![Just(1usize << 16), 20usize..90],
    ) {
        let mut text = lines.join(if crlf { "\r\n" } else { "\n" });
        if trailing_newline {
            text.push('\n');
        }
        let opts = DecodeOptions { framing: Framing::Lines, max_line_bytes: max, ..DecodeOptions::default() };
        let mut sink = Collect(Vec::new());
        let summary = for_each_record(text.as_bytes(), &opts, &mut sink).unwrap();
        let expected = line_by_line(text.as_bytes(), max);
        prop_assert_eq!(summary.records as usize, expected.iter().filter(|o| o.is_ok()).count());
        prop_assert_eq!(&sink.0, &expected);
    }
}

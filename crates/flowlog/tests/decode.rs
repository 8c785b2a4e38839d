//! Framings, sample files and AWS documentation examples through `for_each_record`.

mod common;

use std::net::IpAddr;

use common::{gzip, sample, Collect};
use flowlog::{
    encode_kpl, for_each_record, Action, DecodeError, DecodeOptions, Field, Format, Framing,
    LineErrorKind, LineParser, LogStatus, ValueType,
};

fn decode(input: &[u8], opts: &DecodeOptions) -> (flowlog::Summary, Collect) {
    let mut c = Collect::default();
    let s = for_each_record(input, opts, &mut c).expect("decodes");
    (s, c)
}

fn auto() -> DecodeOptions {
    DecodeOptions::default()
}

#[test]
fn splunk_sample_806_records() {
    let gz = sample("splunk-aws-gdi-toolkit/sample-vpcflow.log.gz");
    assert_eq!(Framing::detect(&gz), Framing::Gzip);
    let (s, c) = decode(&gz, &auto());
    assert_eq!((s.records, s.malformed, s.headers), (806, 0, 1));
    assert_eq!((c.accepts, c.rejects), (767, 39));
    assert!(s.decoded_bytes > s.input_bytes);
    // Every REJECT is inbound to 172.21.12.101.
    let mut p = LineParser::new();
    let f = Format::default_v2();
    for line in c.lines.iter().filter(|l| l.contains("REJECT")) {
        let r = p.parse(line.as_bytes(), &f, 1, 1 << 16).unwrap();
        assert_eq!(r.dstaddr(), Ok(Some("172.21.12.101".parse().unwrap())));
    }
}

#[test]
fn otel_cloudwatch_envelope_raw_and_gzipped() {
    let json = sample("otel-contrib/valid_vpc_flow_cw.json");
    assert_eq!(Framing::detect(&json), Framing::CwLogs);
    for input in [json.clone(), gzip(&json)] {
        let (s, c) = decode(&input, &auto());
        assert_eq!((s.records, s.malformed, s.headers), (2, 0, 0));
        assert_eq!((c.accepts, c.rejects), (1, 1));
        assert_eq!(c.json[1]["dstport"], 3389);
        assert_eq!(c.json[1]["account-id"], "123456789010");
    }
    // Explicit framing with gzip content is inflated too.
    let opts = DecodeOptions { framing: Framing::CwLogs, ..auto() };
    assert_eq!(decode(&gzip(&json), &opts).0.records, 2);
}

#[test]
fn otel_text_samples() {
    let (s, c) = decode(&sample("otel-contrib/valid_vpc_flow_log.log"), &auto());
    assert_eq!((s.records, s.headers), (1, 1));
    assert_eq!(
        c.json[0],
        serde_json::json!({"version":2,"account-id":"12345678910",
        "interface-id":"eni-0eb1e4178af74336c","start":1742570089,"end":1742570142,"log-status":"NODATA"})
    );

    let (s, c) = decode(&sample("otel-contrib/valid_vpc_flow_log_multi.log"), &auto());
    assert_eq!((s.records, c.accepts, c.rejects), (2, 1, 1));

    let (s, c) = decode(&sample("otel-contrib/valid_vpc_flow_log_ecs.log"), &auto());
    assert_eq!(s.records, 1);
    assert_eq!(c.json[0]["ecs-cluster-name"], "my-cluster");
    assert_eq!(c.json[0]["ecs-task-id"], "abcdef1234567890");
    assert_eq!(c.json[0]["version"], 5);

    let (s, c) = decode(&sample("otel-contrib/valid_tgw_flow_log.log"), &auto());
    assert_eq!((s.records, s.malformed), (1, 0));
    let j = &c.json[0];
    assert_eq!(j["tgw-id"], "tgw-0abc12345def67890");
    assert_eq!(j["packets-lost-ttl-expired"], 4);
    assert_eq!(j["tcp-flags"], 2);
    assert_eq!(j["flow-direction"], "ingress");
    assert!(j.get("action").is_none());
}

/// Parses `lines` under `format` and returns the records' JSON.
fn doc_example(format: &str, lines: &[&str]) -> Vec<serde_json::Value> {
    let opts = DecodeOptions { format: Some(Format::parse(format).unwrap()), ..auto() };
    let (s, c) = decode(lines.join("\n").as_bytes(), &opts);
    assert_eq!(s.malformed, 0, "{:?}", c.errors);
    assert_eq!(s.records as usize, lines.len());
    c.json
}

#[test]
fn aws_doc_default_examples() {
    let j = doc_example(
        &Format::default_v2().to_log_format(),
        &[
            "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK",
            "2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK",
            "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA",
            "2 123456789010 eni-11111111aaaaaaaaa - - - - - - - 1431280876 1431280934 - SKIPDATA",
            "2 123456789010 eni-1235b8ca123456789 2001:db8:1234:a100:8d6e:3477:df66:f105 2001:db8:1234:a102:3304:8879:34cf:4071 34892 22 6 54 8855 1477913708 1477913820 ACCEPT OK",
        ],
    );
    assert_eq!(j[0]["bytes"], 4249);
    assert_eq!(j[1]["action"], "REJECT");
    assert_eq!(j[2]["log-status"], "NODATA");
    assert_eq!(j[3]["log-status"], "SKIPDATA");
    assert_eq!(j[4]["srcaddr"], "2001:db8:1234:a100:8d6e:3477:df66:f105");
}

#[test]
fn aws_doc_typed_accessors() {
    let f = Format::default_v2();
    let mut p = LineParser::new();
    let line = b"2 123456789010 eni-1235b8ca123456789 2001:db8:1234:a100:8d6e:3477:df66:f105 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK";
    let r = p.parse(line, &f, 3, 1 << 16).unwrap();
    assert_eq!(r.line_number(), 3);
    assert_eq!(r.action(), Ok(Some(Action::Reject)));
    assert_eq!(r.log_status(), Ok(Some(LogStatus::Ok)));
    assert_eq!(
        r.srcaddr(),
        Ok(Some("2001:db8:1234:a100:8d6e:3477:df66:f105".parse::<IpAddr>().unwrap()))
    );
    assert_eq!(r.dstaddr(), Ok(Some("172.31.9.12".parse::<IpAddr>().unwrap())));
    assert_eq!(
        (r.start(), r.bytes(), r.packets()),
        (Ok(Some(1418530010)), Ok(Some(4249)), Ok(Some(20)))
    );
    assert_eq!(r.interface_id(), Some(&b"eni-1235b8ca123456789"[..]));
    assert_eq!(r.account_id(), Some(&b"123456789010"[..]));

    // Damaged values make the line an error, naming the first damaged field; `unknown` is a
    // valid account id (text) and `-` is absent.
    let mut bad =
        "2 unknown eni-1 10.0.0.300 - x 22 6 20 -5 1418530010 1418530070 MAYBE NOPE".to_string();
    for (field, position, expected, fix) in [
        (Field::SrcAddr, 4, ValueType::Addr, ("10.0.0.300", "10.0.0.30")),
        (Field::SrcPort, 6, ValueType::U16, (" x ", " 80 ")),
        (Field::Bytes, 10, ValueType::U64, ("-5", "5")),
        (Field::Action, 13, ValueType::Action, ("MAYBE", "ACCEPT")),
        (Field::LogStatus, 14, ValueType::LogStatus, ("NOPE", "NODATA")),
    ] {
        let err = p.parse(bad.as_bytes(), &f, 1, 1 << 16).unwrap_err();
        assert_eq!(err.kind, LineErrorKind::BadValue { field, position, expected }, "{bad}");
        bad = bad.replace(fix.0, fix.1);
    }
    let r = p.parse(bad.as_bytes(), &f, 1, 1 << 16).unwrap();
    assert_eq!(r.account_id(), Some(&b"unknown"[..]));
    assert_eq!(r.dstaddr(), Ok(None));
    assert_eq!((r.srcport(), r.bytes()), (Ok(Some(80)), Ok(Some(5))));
}

#[test]
fn aws_doc_v3_tcp_flags() {
    let j = doc_example(
        "version vpc-id subnet-id instance-id interface-id account-id type srcaddr dstaddr srcport dstport pkt-srcaddr pkt-dstaddr protocol bytes packets start end action tcp-flags log-status",
        &[
            "3 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-01234567890123456 eni-1235b8ca123456789 123456789010 IPv4 52.213.180.42 10.0.0.62 43416 5001 52.213.180.42 10.0.0.62 6 568 8 1566848875 1566848933 ACCEPT 2 OK",
            "3 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-01234567890123456 eni-1235b8ca123456789 123456789010 IPv4 10.0.0.62 52.213.180.42 5001 43416 10.0.0.62 52.213.180.42 6 376 7 1566848875 1566848933 ACCEPT 18 OK",
        ],
    );
    assert_eq!((j[0]["tcp-flags"].as_u64(), j[1]["tcp-flags"].as_u64()), (Some(2), Some(18)));
    assert_eq!(j[0]["type"], "IPv4");
    assert_eq!(j[1]["pkt-dstaddr"], "52.213.180.42");
}

#[test]
fn aws_doc_nat_gateway() {
    let j = doc_example(
        "instance-id interface-id srcaddr dstaddr pkt-srcaddr pkt-dstaddr",
        &[
            "- eni-1235b8ca123456789 10.0.1.5 10.0.0.220 10.0.1.5 203.0.113.5",
            "- eni-1235b8ca123456789 10.0.0.220 203.0.113.5 10.0.0.220 203.0.113.5",
            "i-01234567890123456 eni-1111aaaa2222bbbb3 10.0.1.5 203.0.113.5 10.0.1.5 203.0.113.5",
        ],
    );
    assert!(j[0].get("instance-id").is_none());
    assert_eq!(j[0]["dstaddr"], "10.0.0.220");
    assert_eq!(j[0]["pkt-dstaddr"], "203.0.113.5");
    assert_eq!(j[2]["instance-id"], "i-01234567890123456");
}

#[test]
fn aws_doc_transit_gateway() {
    let j = doc_example(
        "version interface-id account-id vpc-id subnet-id instance-id srcaddr dstaddr srcport dstport protocol tcp-flags type pkt-srcaddr pkt-dstaddr action log-status",
        &[
            "3 eni-33333333333333333 123456789010 vpc-abcdefab012345678 subnet-22222222bbbbbbbbb i-01234567890123456 10.20.33.164 10.40.2.236 39812 80 6 3 IPv4 10.20.33.164 10.40.2.236 ACCEPT OK",
            "3 eni-11111111111111111 123456789010 vpc-abcdefab012345678 subnet-11111111aaaaaaaaa - 10.40.1.175 10.40.2.236 39812 80 6 3 IPv4 10.20.33.164 10.40.2.236 ACCEPT OK",
        ],
    );
    assert!(j[1].get("instance-id").is_none());
    assert_eq!(j[1]["pkt-srcaddr"], "10.20.33.164");
    assert_eq!(j[1]["srcaddr"], "10.40.1.175");
}

#[test]
fn v5_traffic_path_and_v8_fields() {
    let j = doc_example(
        "${version} ${srcaddr} ${dstaddr} ${pkt-src-aws-service} ${pkt-dst-aws-service} ${flow-direction} ${traffic-path} ${region} ${az-id} ${sublocation-type} ${sublocation-id} ${reject-reason} ${resource-id} ${encryption-status} ${some-future-field}",
        &["8 10.0.0.5 52.95.128.4 - S3 egress 8 us-east-1 use1-az4 - - BPA vpc-0123 1 hello"],
    );
    assert_eq!(j[0]["traffic-path"], 8);
    assert_eq!(j[0]["pkt-dst-aws-service"], "S3");
    assert_eq!(j[0]["reject-reason"], "BPA");
    assert_eq!(j[0]["encryption-status"], 1);
    assert_eq!(j[0]["some-future-field"], "hello");
}

#[test]
fn header_wins_over_option_and_version_is_not_layout() {
    // Custom-format header, version says 2 but layout is the header's.
    let input = b"version srcaddr action\n2 10.0.0.1 REJECT\n";
    let opts = DecodeOptions { format: Some(Format::default_v2()), ..auto() };
    let (s, c) = decode(input, &opts);
    assert_eq!((s.records, s.headers, c.rejects), (1, 1, 1));
    // Parquet-style header spelling.
    let (s, _) = decode(b"version log_status\n2 OK\n", &auto());
    assert_eq!((s.records, s.malformed), (1, 0));
}

#[test]
fn line_endings_blank_lines_and_errors() {
    let good = "2 123456789010 eni-1 10.0.0.1 8.8.8.8 1 53 17 1 60 1 2 REJECT OK";
    let input = format!("\r\n{good}\r\n\n   \n2 1 2\n{good}\n\u{0}\u{1}junk\n{good}");
    let (s, c) = decode(input.as_bytes(), &auto());
    assert_eq!((s.records, s.malformed), (3, 2));
    assert_eq!(c.errors[0].line, 5);
    assert_eq!(c.errors[0].kind, LineErrorKind::TooFewFields { expected: 14, found: 3 });
    assert_eq!(c.errors[1].line, 7);
    assert_eq!(c.errors[1].kind, LineErrorKind::ControlByte { offset: 0, byte: 0 });
    let long = format!("{good}\n{}\n", "x".repeat(100));
    let opts = DecodeOptions { max_line_bytes: 80, ..auto() };
    let (s, c) = decode(long.as_bytes(), &opts);
    assert_eq!((s.records, s.malformed), (1, 1));
    assert_eq!(c.errors[0].kind, LineErrorKind::TooLong { len: 100, max: 80 });
}

#[test]
fn multi_member_gzip_and_bomb() {
    let a = b"version srcaddr\n2 1.2.3.4\n";
    let mut two = gzip(a);
    two.extend(gzip(b"2 5.6.7.8\n"));
    let (s, c) = decode(&two, &auto());
    assert_eq!(s.records, 2);
    assert_eq!(c.lines, vec!["2 1.2.3.4", "2 5.6.7.8"]);

    let bomb = gzip(&vec![b'\n'; 10 << 20]);
    let opts = DecodeOptions { max_decompressed_bytes: 1 << 20, ..auto() };
    let err = for_each_record(&bomb, &opts, &mut Collect::default()).unwrap_err();
    assert!(matches!(err, DecodeError::DecompressionLimit { limit } if limit == 1 << 20), "{err}");
    let err = for_each_record(&two[..two.len() / 2], &auto(), &mut Collect::default());
    assert!(matches!(err, Err(DecodeError::Gzip(_))));
}

#[test]
fn cloudwatch_control_message_and_unknown_type() {
    let control = br#"{"messageType":"CONTROL_MESSAGE","owner":"CloudwatchLogs","logGroup":"","logStream":"","subscriptionFilters":[],"logEvents":[{"id":"","timestamp":1,"message":"CWL CONTROL MESSAGE: Checking health of destination Kinesis stream."}]}"#;
    let (s, c) = decode(&gzip(control), &auto());
    assert_eq!((s.records, s.malformed, s.control_messages, c.controls), (0, 0, 1, 1));
    let odd = br#"{"messageType":"OTHER","logEvents":[]}"#;
    let err = for_each_record(odd, &auto(), &mut Collect::default()).unwrap_err();
    assert!(matches!(err, DecodeError::UnknownMessageType { index: 0, .. }));
    let err = for_each_record(br#"{"logEvents": 5}"#, &auto(), &mut Collect::default());
    assert!(matches!(err, Err(DecodeError::Json { index: 0, .. })));
}

#[test]
fn firehose_records() {
    let line = "2 123456789010 eni-1 10.0.0.1 8.8.8.8 1 53 17 1 60 1 2 REJECT OK";
    let one = format!("{{\"message\":\"{line}\"}}");
    for input in [one.clone(), format!("{one}\n{one}\n"), format!("{one}{one}{one}")] {
        assert_eq!(Framing::detect(input.as_bytes()), Framing::Firehose);
        let (s, c) = decode(input.as_bytes(), &auto());
        assert_eq!(s.records as usize, input.matches("message").count());
        assert!(c.lines.iter().all(|l| l == line));
    }
    // Escaped content is unescaped.
    let (s, c) = decode(
        br#"{"message":"2 1 eni-1 10.0.0.1 8.8.8.8 1 53 17 1 60 1 2 \u0052EJECT OK"}"#,
        &auto(),
    );
    assert_eq!((s.records, c.rejects), (1, 1));
    let err = for_each_record(br#"{"other":1}"#, &auto(), &mut Collect::default());
    assert!(matches!(err, Err(DecodeError::UnrecognisedJson { index: 0 })));
}

#[test]
fn kpl_aggregated_records() {
    let json = sample("otel-contrib/valid_vpc_flow_cw.json");
    let cw = gzip(&json);
    let plain = b"2 1 eni-1 10.0.0.1 8.8.8.8 1 53 17 1 60 1 2 REJECT OK\n";
    let kpl = encode_kpl(&[
        &cw,
        plain,
        br#"{"message":"2 1 eni-1 10.0.0.1 8.8.8.8 1 53 17 1 60 1 2 ACCEPT OK"}"#,
    ]);
    assert_eq!(Framing::detect(&kpl), Framing::Kpl);
    let (s, c) = decode(&kpl, &auto());
    assert_eq!((s.records, c.accepts, c.rejects), (4, 2, 2));
    let mut bad = kpl.clone();
    bad[10] ^= 0x40;
    let err = for_each_record(&bad, &auto(), &mut Collect::default()).unwrap_err();
    assert!(matches!(err, DecodeError::KplDigestMismatch));
}

#[test]
fn parquet_object() {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};

    let cols: Vec<(&str, ArrayRef)> = vec![
        ("version", Arc::new(Int32Array::from(vec![2, 2]))),
        ("account_id", Arc::new(StringArray::from(vec!["123456789010", "123456789010"]))),
        ("srcaddr", Arc::new(StringArray::from(vec![Some("10.0.0.1"), None]))),
        ("dstaddr", Arc::new(StringArray::from(vec![Some("8.8.8.8"), None]))),
        ("bytes", Arc::new(Int64Array::from(vec![Some(4249), None]))),
        ("start", Arc::new(Int64Array::from(vec![1418530010, 1418530011]))),
        ("action", Arc::new(StringArray::from(vec![Some("REJECT"), None]))),
        ("log_status", Arc::new(StringArray::from(vec!["OK", "NODATA"]))),
    ];
    let batch = RecordBatch::try_from_iter(cols).unwrap();
    let mut buf = Vec::new();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::GZIP(Default::default()))
        .build();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    assert_eq!(Framing::detect(&buf), Framing::Parquet);
    let (s, c) = decode(&buf, &auto());
    assert_eq!((s.records, s.malformed, c.rejects), (2, 0, 1));
    assert_eq!(c.lines[0], "2 123456789010 10.0.0.1 8.8.8.8 4249 1418530010 REJECT OK");
    assert_eq!(
        c.json[1],
        serde_json::json!({"version":2,"account-id":"123456789010","start":1418530011,"log-status":"NODATA"})
    );
    let err = for_each_record(b"PAR1garbage", &auto(), &mut Collect::default());
    assert!(matches!(err, Err(DecodeError::Parquet(_))));
}

#[test]
fn framing_names() {
    for f in Framing::ALL {
        assert_eq!(f.name().parse::<Framing>(), Ok(f));
    }
    assert!("zip".parse::<Framing>().is_err());
    assert_eq!(Framing::detect(b"2 123"), Framing::Lines);
    assert_eq!(Framing::detect(b""), Framing::Lines);
    assert_eq!(Framing::detect(b"  {\"message\":\"x\"}"), Framing::Firehose);
}

#[test]
fn summary_merge() {
    let (mut a, _) = decode(b"version srcaddr\n2 1.2.3.4\n", &auto());
    let (b, _) = decode(b"2 1\n", &auto());
    a.merge(&b);
    assert_eq!((a.records, a.malformed, a.headers, a.input_bytes), (1, 1, 1, 30));
}

/// Regression (#28 item 3): a value that does not parse as its field's type made no error: the
/// line was a record (`"srcport":"44x3"` printed, a REJECT counted). Now the line is malformed,
/// on the fast path (plain ASCII) and the exact one (CRLF, non-ASCII) alike, naming the field.
#[test]
fn damaged_fields_are_damaged_lines() {
    let good = [
        "2",
        "123456789010",
        "eni-1",
        "10.0.0.1",
        "8.8.8.8",
        "443",
        "49152",
        "6",
        "10",
        "840",
        "1700000000",
        "1700000060",
        "REJECT",
        "OK",
    ];
    let line = |i: usize, v: &str| {
        let mut t = good.map(str::to_string);
        t[i] = v.to_string();
        t.join(" ")
    };
    let cases: &[(usize, &str, Field, ValueType)] = &[
        (5, "44x3", Field::SrcPort, ValueType::U16),
        (5, "65536", Field::SrcPort, ValueType::U16),
        (3, "10.0.0.999", Field::SrcAddr, ValueType::Addr),
        (4, "8.8.8", Field::DstAddr, ValueType::Addr),
        (7, "256", Field::Protocol, ValueType::U8),
        (0, "x", Field::Version, ValueType::U8),
        (9, "18446744073709551616", Field::Bytes, ValueType::U64),
        (10, "+1700000000", Field::Start, ValueType::U64),
        (10, "", Field::Start, ValueType::U64),
        (12, "REJECTED", Field::Action, ValueType::Action),
        (13, "ok", Field::LogStatus, ValueType::LogStatus),
        (2, "eni-\u{e9}", Field::InterfaceId, ValueType::Text),
    ];
    for (i, v, field, expected) in cases {
        for crlf in [false, true] {
            let end = if crlf { "\r\n" } else { "\n" };
            let input =
                format!("{}{end}{}{end}{}{end}", good.join(" "), line(*i, v), good.join(" "));
            let (s, c) = decode(input.as_bytes(), &auto());
            assert_eq!((s.records, s.malformed), (2, 1), "{v:?} in {field}");
            assert_eq!(c.rejects, 2, "{v:?} in {field}: the damaged REJECT is not a record");
            let want = LineErrorKind::BadValue {
                field: *field,
                position: *i as u16 + 1,
                expected: *expected,
            };
            assert_eq!((c.errors[0].line, c.errors[0].kind), (2, want), "{v:?}");
            let msg = c.errors[0].to_string();
            assert!(msg.contains(&format!("({field})")), "{msg}");
        }
    }
    // `-` is absent in every field, typed or not; leading zeros are still numbers.
    let absent = good.iter().enumerate().map(|(i, v)| if i == 12 { *v } else { "-" });
    let zeros = line(5, "00443");
    let input = format!("{}\n{zeros}\n", absent.collect::<Vec<_>>().join(" "));
    let (s, c) = decode(input.as_bytes(), &auto());
    assert_eq!((s.records, s.malformed, c.rejects), (2, 0, 2));
    assert_eq!(c.json[1]["srcport"], 443);
    // Typed fields of later versions, under a header.
    let input = b"version flow-direction traffic-path tcp-flags\n5 egress 1 18\n5 outbound 1 18\n5 ingress 9000 2\n";
    let (s, c) = decode(input, &auto());
    assert_eq!((s.records, s.malformed), (1, 2));
    assert_eq!(
        c.errors[0].kind,
        LineErrorKind::BadValue {
            field: Field::FlowDirection,
            position: 2,
            expected: ValueType::FlowDirection
        }
    );
    assert_eq!(
        c.errors[1].kind,
        LineErrorKind::BadValue { field: Field::TrafficPath, position: 3, expected: ValueType::U8 }
    );
}

/// A Parquet object of `rows` rows of one column, all `value` (dictionary- and run-length encoded:
/// a few hundred bytes whatever the count), gzip-compressed.
fn parquet_of(name: &str, value: &str, rows: usize) -> Vec<u8> {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, RecordBatch, StringArray};

    let col: ArrayRef = Arc::new(StringArray::from(vec![value; rows]));
    let batch = RecordBatch::try_from_iter([(name, col)]).unwrap();
    let mut buf = Vec::new();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::GZIP(Default::default()))
        .build();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    buf
}

/// Regression (#28 item 5): Parquet decoding had no output budget (a 1.2 KB file decoded to 280
/// MB). A file whose rows alone exceed the budget is refused before any row is decoded; one whose
/// rendered text exceeds it stops there, having delivered no more than the budget.
#[test]
fn parquet_output_is_bounded_like_decompression() {
    let limit = 1u64 << 20;
    let opts = DecodeOptions { max_decompressed_bytes: limit, ..auto() };
    // 1 M rows of `OK`: at least 2 MB of text, from a file of a few hundred bytes.
    let many = parquet_of("log_status", "OK", 1 << 20);
    assert!(many.len() < 4096, "{} bytes", many.len());
    let mut c = Collect::default();
    let err = for_each_record(&many, &opts, &mut c).unwrap_err();
    assert!(matches!(err, DecodeError::DecompressionLimit { limit: l } if l == limit), "{err}");
    assert_eq!(c.lines.len(), 0, "refused before decoding");
    // 20,000 rows of a 200-byte id: 40 KB by the row count, 4 MB of text.
    let wide = parquet_of("interface_id", &"e".repeat(200), 20_000);
    let mut c = Collect::default();
    let err = for_each_record(&wide, &opts, &mut c).unwrap_err();
    assert!(matches!(err, DecodeError::DecompressionLimit { .. }), "{err}");
    assert!(!c.lines.is_empty() && c.lines.len() as u64 * 201 <= limit, "{}", c.lines.len());
    // Within the budget: every row.
    let (s, _) = decode(&parquet_of("log_status", "OK", 1000), &opts);
    assert_eq!(s.records, 1000);
    // Inside gzip, the inflated bytes count against the same budget.
    let nested = gzip(&parquet_of("interface_id", &"e".repeat(200), 2000));
    let (s, _) = decode(&nested, &opts);
    assert_eq!(s.records, 2000);
}

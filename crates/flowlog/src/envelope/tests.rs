use super::*;
use crate::decode::{json_items, JsonItem};
use proptest::prelude::*;

/// The items serde_json gives, as owned texts (`None` for a control message); `Err` on an error.
fn by_serde(data: &[u8]) -> Result<Vec<Option<Vec<u8>>>, String> {
    let mut items = Vec::new();
    json_items(data, |item| {
        items.push(match item {
            JsonItem::Control => None,
            JsonItem::Text(t) => Some(t.to_vec()),
        })
    })
    .map_err(|e| e.to_string())?;
    Ok(items)
}

/// The items of the fast path, as owned texts; `None` when it declines.
fn by_scan(data: &[u8]) -> Option<Vec<Option<Vec<u8>>>> {
    let mut items = Vec::new();
    scan(data, &mut items)?;
    Some(
        items
            .into_iter()
            .map(|i| match i {
                Item::Control => None,
                Item::Text(r) => Some(data[r].to_vec()),
            })
            .collect(),
    )
}

fn text(s: &str) -> Option<Vec<u8>> {
    Some(s.as_bytes().to_vec())
}

const CW: &str = r#"{"messageType":"DATA_MESSAGE","owner":"123456789012","logGroup":"vpc","logStream":"eni-1-all","subscriptionFilters":["f"],"logEvents":[{"id":"3546","timestamp":1717200000000,"message":"2 1 eni-1 10.0.0.1 8.8.8.8 1 2 6 1 40 1717200000 1717200060 REJECT OK"},{"id":"3547","timestamp":1.5e3,"extractedFields":{"a":[true,false,null,-0.25E-2]},"message":"line two"}]}"#;

#[test]
fn takes_the_fast_path_for_what_aws_sends() {
    let items = by_scan(CW.as_bytes()).expect("fast path");
    assert_eq!(
        items,
        vec![
            text("2 1 eni-1 10.0.0.1 8.8.8.8 1 2 6 1 40 1717200000 1717200060 REJECT OK"),
            text("line two")
        ]
    );
    assert_eq!(Ok(items), by_serde(CW.as_bytes()));

    let control = r#"{"messageType":"CONTROL_MESSAGE","logEvents":[{"id":"1","timestamp":1,"message":"CWL CONTROL MESSAGE: Checking health of destination Firehose."}]}"#;
    assert_eq!(by_scan(control.as_bytes()), Some(vec![None]));

    // Firehose records concatenated, with whitespace; an event list ahead of its type.
    let firehose = "{\"message\":\"a b\"}\n {\"message\" : \"c\" }\r\n\t{\"logEvents\":[],\"messageType\":\"DATA_MESSAGE\"}";
    assert_eq!(by_scan(firehose.as_bytes()), Some(vec![text("a b"), text("c")]));
    assert_eq!(by_scan(b" \n"), Some(vec![]));
    // Escapes in fields that are only skipped are fine.
    let skipped = r#"{"owner":"a\"b\\c\/d\n","message":"x"}"#;
    assert_eq!(by_scan(skipped.as_bytes()), Some(vec![text("x")]));
}

#[test]
fn declines_what_it_does_not_handle_exactly() {
    for bad in [
        r#"{"message":"a\"b"}"#,                 // escape in a returned string
        r#"{"owner":"\u0041","message":"x"}"#,   // \u escape anywhere
        "{\"message\":\"caf\u{e9}\"}",           // non-ASCII
        "{\"message\":\"a\tb\"}",                // raw tab inside a string
        r#"{"message":"a","message":"b"}"#,      // duplicate field
        r#"{"messageType":null,"message":"a"}"#, // wrong type
        r#"{"messageType":"OTHER"}"#,            // unknown type
        r#"{"messageType":"DATA_MESSAGE","logEvents":null}"#,
        r#"{"logEvents":[{"id":"1"}]}"#, // event without a message
        r#"{"mess\u0061ge":"a"}"#,       // escaped key
        r#"{"m\u0065ssage":"a"}"#,
        "{}",
        "[]",
        r#"{"message":"a",}"#,
        r#"{"message":"a"},{"message":"b"}"#,
        r#"{"n":01,"message":"a"}"#,
        r#"{"n":1.,"message":"a"}"#,
        r#"{"n":-,"message":"a"}"#,
        r#"{"n":tru,"message":"a"}"#,
        r#"{"message":"a""#,
        "{\"message\":\"a\"}\u{7f}",
    ] {
        assert_eq!(by_scan(bad.as_bytes()), None, "{bad}");
    }
    let deep = format!("{{\"x\":{}1{},\"message\":\"a\"}}", "[".repeat(100), "]".repeat(100));
    assert_eq!(by_scan(deep.as_bytes()), None);
}

fn json_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        8 => "[a-zA-Z0-9 .:-]{0,12}",
        1 => Just(r#"\""#.to_string()),
        1 => Just(r"\\".to_string()),
        1 => Just(r"\n".to_string()),
        1 => Just(r"\u0041".to_string()),
        1 => Just("\u{e9}".to_string()),
        1 => Just("\t".to_string()),
        1 => Just(r"\x".to_string()),
    ];
    proptest::collection::vec(piece, 0..4).prop_map(|p| format!("\"{}\"", p.concat()))
}

fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        json_string(),
        prop::sample::select(vec![
            "0", "12", "-3", "1.5", "1e3", "-0.5E+2", "01", "1.", "-", "2e", "true", "false",
            "null", "nul", "1x",
        ])
        .prop_map(str::to_string),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4)
                .prop_map(|v| format!("[{}]", v.join(","))),
            proptest::collection::vec((json_string(), inner), 0..4).prop_map(|v| {
                let m: Vec<String> = v.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("{{{}}}", m.join(","))
            }),
        ]
    })
}

fn member(keys: Vec<&'static str>, value: BoxedStrategy<String>) -> BoxedStrategy<String> {
    (prop::sample::select(keys), value).prop_map(|(k, v)| format!("\"{k}\" : {v}")).boxed()
}

fn event() -> impl Strategy<Value = String> {
    let m = prop_oneof![
        4 => member(vec!["message"], "[a-z0-9 .]{0,20}".prop_map(|s| format!("\"{s}\"")).boxed()),
        1 => member(vec!["message"], json_value().boxed()),
        3 => member(vec!["id", "timestamp", "extractedFields", "mess\\u0061ge"], json_value().boxed()),
    ];
    proptest::collection::vec(m, 0..4).prop_map(|v| format!("{{{}}}", v.join(",")))
}

fn envelope_json() -> impl Strategy<Value = String> {
    let kind = prop::sample::select(vec![
        "\"DATA_MESSAGE\"",
        "\"DATA_MESSAGE\"",
        "\"CONTROL_MESSAGE\"",
        "\"OTHER\"",
        "null",
    ])
    .prop_map(str::to_string);
    let events =
        proptest::collection::vec(event(), 0..4).prop_map(|v| format!("[{}]", v.join(",")));
    let m = prop_oneof![
        3 => member(vec!["messageType"], kind.boxed()),
        3 => member(vec!["logEvents"], events.boxed()),
        2 => member(vec!["message"], "[a-z0-9 .]{0,20}".prop_map(|s| format!("\"{s}\"")).boxed()),
        2 => member(vec!["owner", "logGroup", "subscriptionFilters", "message"], json_value().boxed()),
    ];
    proptest::collection::vec(m, 0..5).prop_map(|v| format!("{{{}}}", v.join(",")))
}

/// Payloads: objects separated by whitespace (or not), then maybe one byte changed.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    let objects = proptest::collection::vec(
        (envelope_json(), prop::sample::select(vec!["", " ", "\n", "\r\n", ","])),
        1..4,
    )
    .prop_map(|v| v.into_iter().flat_map(|(o, sep)| [o, sep.to_string()]).collect::<String>());
    (objects, proptest::option::of((any::<prop::sample::Index>(), any::<u8>()))).prop_map(
        |(s, edit)| {
            let mut b = s.into_bytes();
            if let Some((at, byte)) = edit {
                let i = at.index(b.len() + 1);
                if i < b.len() && byte % 2 == 0 {
                    b.remove(i);
                } else {
                    const BYTES: &[u8] = b"{}[],:\" \\a0-";
                    b.insert(i, BYTES[usize::from(byte) % BYTES.len()]);
                }
            }
            b
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Whenever the fast path answers, serde_json reads the payload without error and gives the
    /// same items in the same order.
    #[test]
    fn fast_path_agrees_with_serde(data in payload()) {
        if let Some(items) = by_scan(&data) {
            prop_assert_eq!(Ok(items), by_serde(&data), "{}", String::from_utf8_lossy(&data));
        }
    }
}

/// The property above is not vacuous: most unedited generated payloads without escapes take the
/// fast path.
#[test]
fn generated_plain_payloads_take_the_fast_path() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut fast, mut valid) = (0, 0);
    for _ in 0..2000 {
        let s = envelope_json().new_tree(&mut runner).unwrap().current();
        if by_serde(s.as_bytes()).is_ok() {
            valid += 1;
            fast += usize::from(by_scan(s.as_bytes()).is_some());
        }
    }
    assert!(valid > 200, "only {valid} valid payloads generated");
    assert!(fast * 2 > valid, "fast path took {fast} of {valid} valid payloads");
}

//! JSON rendering of one record (for `flowspike parse`).

use crate::field::FieldKind;
use crate::record::{parse_u64, FlowRecord};

/// Appends `rec` to `out` as one JSON object keyed by AWS field names (`srcaddr`,
/// `log-status`, ...). Absent (`-`) fields are omitted; numeric fields whose value is a valid
/// `u64` are JSON numbers; everything else is a properly escaped string. No trailing newline.
///
/// ```
/// use flowlog::{Format, LineParser, write_json};
/// let f = Format::parse("srcport action dstaddr").unwrap();
/// let mut p = LineParser::new();
/// let rec = p.parse(b"443 ACCEPT -", &f, 1, 1024).unwrap();
/// let mut out = Vec::new();
/// write_json(&rec, &mut out);
/// assert_eq!(out, br#"{"srcport":443,"action":"ACCEPT"}"#);
/// ```
pub fn write_json(rec: &FlowRecord, out: &mut Vec<u8>) {
    let format = rec.format();
    out.push(b'{');
    let mut first = true;
    for (field, value) in rec.fields() {
        let Some(value) = value else { continue };
        if !first {
            out.push(b',');
        }
        first = false;
        write_str(format.name_of(field).as_bytes(), out);
        out.push(b':');
        if field.kind() == FieldKind::Uint && parse_u64(value).is_some() {
            // Strip leading zeros so the number is valid JSON.
            let digits = value.iter().position(|b| *b != b'0').map_or(&b"0"[..], |i| &value[i..]);
            out.extend_from_slice(digits);
        } else {
            write_str(value, out);
        }
    }
    out.push(b'}');
}

fn write_str(s: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let text = String::from_utf8_lossy(s);
    out.push(b'"');
    for &b in text.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f | 0x7f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 15)]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Format, LineParser};

    fn check(format: &str, line: &str, expected: &str) {
        let f = Format::parse(format).unwrap();
        let mut p = LineParser::new();
        let rec = p.parse(line.as_bytes(), &f, 1, 1 << 16).unwrap();
        let mut out = Vec::new();
        write_json(&rec, &mut out);
        assert_eq!(String::from_utf8(out.clone()).unwrap(), expected);
        serde_json::from_slice::<serde_json::Value>(&out).expect("valid json");
    }

    #[test]
    fn rendering() {
        check(
            "version account-id srcaddr log-status bytes",
            "2 unknown 10.0.0.1 OK 0042",
            r#"{"version":2,"account-id":"unknown","srcaddr":"10.0.0.1","log-status":"OK","bytes":42}"#,
        );
        check("srcport my-field", "- a\"b\\c", r#"{"my-field":"a\"b\\c"}"#);
        check("srcport bytes", "- 000", r#"{"bytes":0}"#);
        check("srcport", "-", "{}");
        check("ecs-task-id", "c~f", "{\"ecs-task-id\":\"c~f\"}");
    }
}

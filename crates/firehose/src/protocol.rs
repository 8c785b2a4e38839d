//! The Amazon Data Firehose "HTTP endpoint delivery" protocol, version 1.0: request headers, the
//! (optionally gzip-compressed) JSON body, base64 records, and the JSON response. Pure functions:
//! no I/O, no state, unit-tested here.

use std::borrow::Cow;
use std::io::Read;

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// Header with the request id; the same on every attempt of one request.
pub const REQUEST_ID_HEADER: &str = "x-amz-firehose-request-id";
/// Header with the protocol version; only [`PROTOCOL_VERSION`] exists.
pub const PROTOCOL_VERSION_HEADER: &str = "x-amz-firehose-protocol-version";
/// Header with the access key configured on the delivery stream.
pub const ACCESS_KEY_HEADER: &str = "x-amz-firehose-access-key";
/// The only protocol version.
pub const PROTOCOL_VERSION: &str = "1.0";
/// Longest accepted request id. Firehose's are UUIDs (36 bytes); the id is kept in the manifest
/// for the dedup window and named in logs, so a long one would cost memory and log volume.
pub const MAX_REQUEST_ID_BYTES: usize = 128;
/// Default cap on the records of one request (`--max-records-per-request`). Firehose sends
/// buffers of at most 64 MiB to an HTTP endpoint, and VPC Flow Logs records (one line, or a
/// CloudWatch Logs envelope of many) are hundreds of bytes at least, so a real batch holds a few
/// hundred thousand records only with tiny records; 100,000 bounds what a hostile body of empty
/// records costs (a few MiB of record headers) while a 64 MiB buffer of ~670-byte records fits.
pub const DEFAULT_MAX_RECORDS: usize = 100_000;

/// Why a request is refused: the HTTP status and the `errorMessage` of the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// 400, 401, 405, 413, 415, 500 or 503.
    pub status: StatusCode,
    /// What is wrong (returned to Firehose, which logs it to CloudWatch Logs).
    pub message: String,
}

impl Rejection {
    /// A rejection with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Rejection {
        Rejection { status, message: message.into() }
    }

    fn bad(message: impl Into<String>) -> Rejection {
        Rejection::new(StatusCode::BAD_REQUEST, message)
    }
}

/// The body compression of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// No `Content-Encoding` (or `identity`).
    Identity,
    /// `Content-Encoding: gzip`.
    Gzip,
}

/// The checked headers of a delivery request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// `X-Amz-Firehose-Request-Id`.
    pub request_id: String,
    /// The body compression.
    pub encoding: Encoding,
}

/// True when `given` equals one of `keys`, compared in constant time over the key bytes (every
/// configured key is compared, whatever matches; only a difference in length returns early, which
/// reveals nothing but a key's length). With no configured keys every request is authorized.
pub fn authorized(keys: &[Vec<u8>], given: Option<&[u8]>) -> bool {
    if keys.is_empty() {
        return true;
    }
    let Some(given) = given else {
        return false;
    };
    let mut ok = subtle::Choice::from(0u8);
    for k in keys {
        ok |= k.as_slice().ct_eq(given);
    }
    bool::from(ok)
}

/// Checks the access key (401), the protocol version and the request id (400) and the
/// `Content-Encoding` (415).
pub fn check_head(headers: &HeaderMap, keys: &[Vec<u8>]) -> Result<RequestHead, Rejection> {
    let given = headers.get(ACCESS_KEY_HEADER).map(|v| v.as_bytes());
    if !authorized(keys, given) {
        let why = if given.is_none() { "missing" } else { "wrong" };
        return Err(Rejection::new(
            StatusCode::UNAUTHORIZED,
            format!("{why} X-Amz-Firehose-Access-Key"),
        ));
    }
    match headers.get(PROTOCOL_VERSION_HEADER).map(|v| v.to_str()) {
        Some(Ok(PROTOCOL_VERSION)) => {}
        Some(v) => {
            return Err(Rejection::bad(format!(
                "unsupported X-Amz-Firehose-Protocol-Version {:?} (expected 1.0)",
                v.unwrap_or("<not ASCII>")
            )))
        }
        None => return Err(Rejection::bad("missing X-Amz-Firehose-Protocol-Version")),
    }
    let request_id = match headers.get(REQUEST_ID_HEADER) {
        Some(v) if valid_request_id(v.as_bytes()) => String::from_utf8_lossy(v.as_bytes()).into(),
        Some(v) => {
            return Err(Rejection::bad(format!(
                "bad X-Amz-Firehose-Request-Id ({} bytes): expected 1 to \
                 {MAX_REQUEST_ID_BYTES} visible ASCII characters",
                v.len()
            )))
        }
        None => return Err(Rejection::bad("missing X-Amz-Firehose-Request-Id")),
    };
    let encoding = match headers.get(axum::http::header::CONTENT_ENCODING).map(|v| v.to_str()) {
        None => Encoding::Identity,
        Some(Ok(v)) if v.trim().eq_ignore_ascii_case("gzip") => Encoding::Gzip,
        Some(Ok(v)) if v.trim().eq_ignore_ascii_case("identity") => Encoding::Identity,
        Some(v) => {
            return Err(Rejection::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "unsupported Content-Encoding {:?} (expected gzip or none)",
                    v.unwrap_or("<not ASCII>")
                ),
            ))
        }
    };
    Ok(RequestHead { request_id, encoding })
}

/// True for a request id of 1 to [`MAX_REQUEST_ID_BYTES`] visible ASCII characters (no space or
/// control character), the only ids answered, remembered and logged.
pub fn valid_request_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID_BYTES && id.iter().all(u8::is_ascii_graphic)
}

/// The body as JSON bytes: gunzipped when `encoding` is gzip, never more than `max_bytes` (413
/// past it: a small gzip body that inflates past the limit is refused without a buffer larger than
/// `max_bytes`); 400 when it is not gzip.
pub fn decode_body(
    body: &[u8],
    encoding: Encoding,
    max_bytes: usize,
) -> Result<Cow<'_, [u8]>, Rejection> {
    if body.len() > max_bytes {
        return Err(too_large(max_bytes));
    }
    match encoding {
        Encoding::Identity => Ok(Cow::Borrowed(body)),
        Encoding::Gzip => inflate_bounded(body, max_bytes).map(Cow::Owned),
    }
}

/// Gunzips `body` into a buffer whose capacity never exceeds `max_bytes`: sized first by the
/// gzip trailer (ISIZE, exact for the one-member bodies Firehose sends; capped at the limit),
/// grown by doubling only up to the limit, and refused (413) as soon as the output would pass it.
/// (`read_to_end` would double the buffer past the limit: up to twice `max_bytes` reserved for
/// a bomb, per concurrent request.)
fn inflate_bounded(body: &[u8], max_bytes: usize) -> Result<Vec<u8>, Rejection> {
    let announced = body
        .len()
        .checked_sub(4)
        .and_then(|i| body.get(i..))
        .and_then(|t| <[u8; 4]>::try_from(t).ok())
        .map_or(0, |t| u32::from_le_bytes(t) as usize);
    let mut out = Vec::with_capacity(announced.min(max_bytes));
    let mut chunk = vec![0u8; 64 * 1024];
    let mut gz = flate2::read::MultiGzDecoder::new(body);
    loop {
        let n = match gz.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Rejection::bad(format!("body is not valid gzip: {e}"))),
        };
        if out.len() + n > max_bytes {
            return Err(Rejection::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body inflates past the limit of {max_bytes} bytes"),
            ));
        }
        if out.capacity() - out.len() < n {
            let want = out.capacity().saturating_mul(2).max(out.len() + n).min(max_bytes);
            out.reserve_exact(want - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// The 413 rejection for a body over `max_bytes`.
pub fn too_large(max_bytes: usize) -> Rejection {
    Rejection::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("body is larger than the limit of {max_bytes} bytes"),
    )
}

/// The records of a JSON body `{"requestId", "timestamp", "records": [{"data": "<base64>"}]}`,
/// base64-decoded. 400 when the JSON does not have that shape, a record is not base64, or the
/// body's `requestId` differs from the header's; 413 past `max_records` records (counted while
/// parsing: nothing is held for the records past the cap).
///
/// Each record is decoded as soon as it is parsed, so the body's record list is never held as
/// JSON strings next to the decoded bytes.
pub fn parse_records(
    json: &[u8],
    request_id: &str,
    max_records: usize,
) -> Result<Vec<Vec<u8>>, Rejection> {
    let refused = std::cell::RefCell::new(None);
    let seed = EnvelopeSeed { max_records, refused: &refused };
    let mut de = serde_json::Deserializer::from_slice(json);
    let parsed = serde::de::DeserializeSeed::deserialize(seed, &mut de).and_then(|e| {
        de.end()?;
        Ok(e)
    });
    let (body_id, records) = match parsed {
        Ok(e) => e,
        Err(e) => {
            return Err(refused
                .into_inner()
                .unwrap_or_else(|| Rejection::bad(format!("bad JSON body: {e}"))))
        }
    };
    if let Some(id) = body_id {
        if id != request_id {
            return Err(Rejection::bad(format!(
                "body requestId {id:?} differs from X-Amz-Firehose-Request-Id {request_id:?}"
            )));
        }
    }
    Ok(records)
}

/// Where a rejection other than "bad JSON" (too many records, bad base64) is kept while serde
/// unwinds with its own error.
type Refused<'r> = &'r std::cell::RefCell<Option<Rejection>>;

/// The body object: `requestId` (optional), `records` (required), anything else ignored.
struct EnvelopeSeed<'r> {
    max_records: usize,
    refused: Refused<'r>,
}

impl<'de> serde::de::DeserializeSeed<'de> for EnvelopeSeed<'_> {
    type Value = (Option<Cow<'de, str>>, Vec<Vec<u8>>);

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for EnvelopeSeed<'_> {
    type Value = (Option<Cow<'de, str>>, Vec<Vec<u8>>);

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object with records")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error as _;
        let mut request_id: Option<Cow<'de, str>> = None;
        let mut records = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match &*key {
                "requestId" if request_id.is_some() => {
                    return Err(A::Error::duplicate_field("requestId"))
                }
                "requestId" => request_id = Some(map.next_value::<BorrowedStr<'de>>()?.0),
                "records" if records.is_some() => return Err(A::Error::duplicate_field("records")),
                "records" => {
                    let seed = RecordsSeed { max_records: self.max_records, refused: self.refused };
                    records = Some(map.next_value_seed(seed)?);
                }
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        let records = records.ok_or_else(|| A::Error::missing_field("records"))?;
        Ok((request_id, records))
    }
}

/// A string, borrowed from the body when it has no escape.
struct BorrowedStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for BorrowedStr<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct S<'a>(#[serde(borrow)] Cow<'a, str>);
        S::deserialize(d).map(|s| BorrowedStr(s.0))
    }
}

/// One record: `{"data": "<base64>"}`.
#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    data: Cow<'a, str>,
}

/// The `records` array, decoded record by record and refused past `max_records`.
struct RecordsSeed<'r> {
    max_records: usize,
    refused: Refused<'r>,
}

impl<'de> serde::de::DeserializeSeed<'de> for RecordsSeed<'_> {
    type Value = Vec<Vec<u8>>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for RecordsSeed<'_> {
    type Value = Vec<Vec<u8>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error as _;
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max_records));
        while let Some(r) = seq.next_element::<Record<'de>>()? {
            let i = out.len();
            if i == self.max_records {
                let msg = format!(
                    "more than {} records in one request (lower the delivery stream's buffer size)",
                    self.max_records
                );
                *self.refused.borrow_mut() =
                    Some(Rejection::new(StatusCode::PAYLOAD_TOO_LARGE, msg.clone()));
                return Err(A::Error::custom(msg));
            }
            match base64::engine::general_purpose::STANDARD.decode(r.data.as_bytes()) {
                Ok(data) => out.push(data),
                Err(e) => {
                    let msg = format!("record {i}: data is not base64: {e}");
                    *self.refused.borrow_mut() = Some(Rejection::bad(msg.clone()));
                    return Err(A::Error::custom(msg));
                }
            }
        }
        Ok(out)
    }
}

/// The response body Firehose expects.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResponseBody {
    /// The request id of the request (empty when it had none).
    #[serde(rename = "requestId")]
    pub request_id: String,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Why the request failed (absent on success).
    #[serde(rename = "errorMessage", skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

impl ResponseBody {
    /// A response to `request_id` now.
    pub fn new(request_id: &str, error_message: Option<String>) -> ResponseBody {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        ResponseBody { request_id: request_id.to_owned(), timestamp, error_message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use std::io::Write;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("gzip");
        e.finish().expect("gzip")
    }

    fn check_head_status(pairs: &[(&'static str, &str)], keys: &[&str], want: Option<u16>) {
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.as_bytes().to_vec()).collect();
        let got = check_head(&headers(pairs), &keys).err().map(|r| r.status.as_u16());
        assert_eq!(got, want, "{pairs:?}");
    }

    #[test]
    fn head_checks() {
        const V: (&str, &str) = (PROTOCOL_VERSION_HEADER, "1.0");
        const ID: (&str, &str) = (REQUEST_ID_HEADER, "req-1");
        const K: (&str, &str) = (ACCESS_KEY_HEADER, "secret");
        check_head_status(&[V, ID, K], &["other", "secret"], None);
        check_head_status(&[V, ID], &[], None);
        check_head_status(&[V, ID], &["secret"], Some(401));
        check_head_status(&[V, ID, (ACCESS_KEY_HEADER, "secreT")], &["secret"], Some(401));
        check_head_status(&[V, ID, (ACCESS_KEY_HEADER, "secret2")], &["secret"], Some(401));
        check_head_status(&[ID, K], &["secret"], Some(400));
        check_head_status(&[(PROTOCOL_VERSION_HEADER, "2.0"), ID, K], &["secret"], Some(400));
        check_head_status(&[V, K], &["secret"], Some(400));
        check_head_status(&[V, ID, K, ("content-encoding", "br")], &["secret"], Some(415));
        let h = check_head(&headers(&[V, ID, ("content-encoding", "gzip")]), &[]).expect("ok");
        assert_eq!(h, RequestHead { request_id: "req-1".into(), encoding: Encoding::Gzip });
    }

    #[test]
    fn bodies_and_limits() {
        let json =
            br#"{"requestId":"r","timestamp":1,"records":[{"data":"aGVsbG8="},{"data":""}]}"#;
        let body = decode_body(json, Encoding::Identity, 1000).expect("plain");
        assert_eq!(
            parse_records(&body, "r", 1000).expect("records"),
            [b"hello".to_vec(), Vec::new()]
        );
        let gz = gzip(json);
        let body = decode_body(&gz, Encoding::Gzip, 1000).expect("gzip");
        assert_eq!(&body[..], &json[..]);
        assert_eq!(decode_body(json, Encoding::Identity, 10).unwrap_err().status, 413);
        // A gzip bomb: 10 MB of zeros in a few kB; refused at the limit.
        let bomb = gzip(&vec![0u8; 10_000_000]);
        assert!(bomb.len() < 20_000, "{}", bomb.len());
        let r = decode_body(&bomb, Encoding::Gzip, 1_000_000).unwrap_err();
        assert_eq!(r.status, 413, "{r:?}");
        assert!(r.message.contains("inflates"), "{r:?}");
        assert_eq!(decode_body(b"not gzip", Encoding::Gzip, 1000).unwrap_err().status, 400);
    }

    fn check_records(json: &str, want_error: Option<&str>) {
        match (parse_records(json.as_bytes(), "r", 1000), want_error) {
            (Ok(_), None) => {}
            (Err(r), Some(w)) => {
                assert_eq!(r.status, 400, "{json}");
                assert!(r.message.contains(w), "{json}: {}", r.message);
            }
            (got, want) => panic!("{json}: got {got:?}, want error {want:?}"),
        }
    }

    #[test]
    fn malformed_bodies() {
        check_records(r#"{"requestId":"r","records":[]}"#, None);
        check_records(r#"{"records":[{"data":"YQ=="}]}"#, None);
        check_records(r#"{"requestId":"r","records":[{"data":"a\/8="}]}"#, None); // escaped
        check_records(r#"{"requestId":"r","records":[{"data":"a\/b="}]}"#, Some("base64"));
        check_records(r#"{"requestId":"r","records":[{"data":"!!!"}]}"#, Some("record 0"));
        check_records(r#"{"requestId":"x","records":[]}"#, Some("differs"));
        check_records(r#"{"requestId":"r"}"#, Some("bad JSON"));
        check_records(r#"{"requestId":"r","records":[{"data":1}]}"#, Some("bad JSON"));
        check_records("[1,2", Some("bad JSON"));
        check_records("", Some("bad JSON"));
        check_records(r#"{"records":[],"records":[]}"#, Some("duplicate field"));
        check_records(r#"{"requestId":"r","records":[{"data":""}]} x"#, Some("trailing"));
        check_records(r#"{"requestId":"r","timestamp":1,"other":{"a":[1]},"records":[]}"#, None);
    }

    /// Regression (issue 28, item 4): a request id of kilobytes was accepted, and every record
    /// of the request carried a copy of it (200,000 records × 8 KB took 3.26 GB). Ids are 1 to
    /// 128 visible ASCII characters.
    #[test]
    fn long_or_unprintable_request_ids_are_refused() {
        const V: (&str, &str) = (PROTOCOL_VERSION_HEADER, "1.0");
        let longest = "a".repeat(MAX_REQUEST_ID_BYTES);
        let too_long = "a".repeat(MAX_REQUEST_ID_BYTES + 1);
        let uuid = "4c5e8a36-3d2f-4f43-9a3b-1f0b3c2f9e11";
        check_head_status(&[V, (REQUEST_ID_HEADER, uuid)], &[], None);
        check_head_status(&[V, (REQUEST_ID_HEADER, &longest)], &[], None);
        check_head_status(&[V, (REQUEST_ID_HEADER, &too_long)], &[], Some(400));
        check_head_status(&[V, (REQUEST_ID_HEADER, &"x".repeat(8192))], &[], Some(400));
        check_head_status(&[V, (REQUEST_ID_HEADER, "a b")], &[], Some(400));
        check_head_status(&[V, (REQUEST_ID_HEADER, "a\tb")], &[], Some(400));
        let mut h = headers(&[V]);
        h.insert(REQUEST_ID_HEADER, HeaderValue::from_bytes(b"r\xc3\xa9").expect("obs-text"));
        let r = check_head(&h, &[]).expect_err("not ASCII");
        assert!(r.message.contains("1 to 128 visible ASCII"), "{r:?}");
    }

    /// Regression (issue 28, item 4): a request's records were not capped (200,000 empty records
    /// in 2.4 MB). Past the cap the request is refused while the JSON is parsed.
    #[test]
    fn records_past_the_cap_are_refused_while_parsing() {
        let json = |n: usize| {
            let recs = vec![r#"{"data":""}"#; n].join(",");
            format!(r#"{{"requestId":"r","records":[{recs}]}}"#)
        };
        assert_eq!(parse_records(json(3).as_bytes(), "r", 3).expect("at the cap").len(), 3);
        let r = parse_records(json(4).as_bytes(), "r", 3).expect_err("past the cap");
        assert_eq!(r.status, 413, "{r:?}");
        assert!(r.message.contains("more than 3 records"), "{r:?}");
        // Past the cap while the rest of the body would also be bad: refused as too many.
        let bad_tail = format!("{}, {{\"data\": 1}}", json(4).trim_end_matches("]}"));
        let r = parse_records(bad_tail.as_bytes(), "r", 3).expect_err("past the cap");
        assert_eq!(r.status, 413, "{r:?}");
    }

    /// Regression (issue 28, item 6, server side): the gunzipped body grew by doubling
    /// (`read_to_end`), so a body inflating to the limit reserved up to twice the limit. The
    /// buffer is now sized by the gzip trailer and never grows past the limit.
    #[test]
    fn gzip_body_never_reserves_past_the_limit() {
        let max = 1_000_000;
        for (len, lie) in [(max, None), (max - 1, None), (max / 3, None), (max, Some(u32::MAX))] {
            let mut gz = gzip(&vec![b' '; len]);
            if let Some(isize) = lie {
                let n = gz.len();
                gz[n - 4..].copy_from_slice(&isize.to_le_bytes());
                // A lying trailer fails the gzip check at the end, after the buffer was sized.
                let r = decode_body(&gz, Encoding::Gzip, max).expect_err("bad trailer");
                assert_eq!(r.status, 400, "{r:?}");
                continue;
            }
            let Cow::Owned(out) = decode_body(&gz, Encoding::Gzip, max).expect("within") else {
                panic!("gzip gives an owned buffer");
            };
            assert_eq!(out.len(), len);
            assert!(out.capacity() <= max, "{len}: capacity {} > {max}", out.capacity());
        }
        // Two members (no exact trailer for the whole): still within the limit.
        let mut two = gzip(&vec![b'a'; max / 2]);
        two.extend(gzip(&vec![b'b'; max / 2]));
        let Cow::Owned(out) = decode_body(&two, Encoding::Gzip, max).expect("two members") else {
            panic!("owned");
        };
        assert_eq!(out.len(), max);
        assert!(out.capacity() <= max, "capacity {}", out.capacity());
        let r = decode_body(&gzip(&vec![b' '; max + 1]), Encoding::Gzip, max).expect_err("over");
        assert_eq!(r.status, 413, "{r:?}");
    }

    #[test]
    fn response_shape() {
        let ok = serde_json::to_value(ResponseBody::new("r", None)).expect("json");
        assert_eq!(ok["requestId"], "r");
        assert!(ok["timestamp"].as_i64().is_some_and(|t| t > 1_600_000_000_000));
        assert!(ok.get("errorMessage").is_none());
        let err = serde_json::to_value(ResponseBody::new("r", Some("bad".into()))).expect("json");
        assert_eq!(err["errorMessage"], "bad");
    }
}

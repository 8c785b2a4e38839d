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
    let request_id = match headers.get(REQUEST_ID_HEADER).map(|v| v.to_str()) {
        Some(Ok(id)) if !id.is_empty() => id.to_owned(),
        Some(_) => return Err(Rejection::bad("bad X-Amz-Firehose-Request-Id")),
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

/// The body as JSON bytes: gunzipped when `encoding` is gzip, never more than `max_bytes` (413
/// past it: a small gzip body that inflates past the limit is refused without holding more than
/// `max_bytes + 1` bytes); 400 when it is not gzip.
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
        Encoding::Gzip => {
            let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(max_bytes) + 1);
            let limit = u64::try_from(max_bytes).unwrap_or(u64::MAX).saturating_add(1);
            flate2::read::MultiGzDecoder::new(body)
                .take(limit)
                .read_to_end(&mut out)
                .map_err(|e| Rejection::bad(format!("body is not valid gzip: {e}")))?;
            if out.len() > max_bytes {
                return Err(Rejection::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body inflates past the limit of {max_bytes} bytes"),
                ));
            }
            Ok(Cow::Owned(out))
        }
    }
}

/// The 413 rejection for a body over `max_bytes`.
pub fn too_large(max_bytes: usize) -> Rejection {
    Rejection::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("body is larger than the limit of {max_bytes} bytes"),
    )
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "requestId", borrow, default)]
    request_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    records: Vec<Record<'a>>,
}

#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    data: Cow<'a, str>,
}

/// The records of a JSON body `{"requestId", "timestamp", "records": [{"data": "<base64>"}]}`,
/// base64-decoded. 400 when the JSON does not have that shape, a record is not base64, or the
/// body's `requestId` differs from the header's.
pub fn parse_records(json: &[u8], request_id: &str) -> Result<Vec<Vec<u8>>, Rejection> {
    let env: Envelope<'_> =
        serde_json::from_slice(json).map_err(|e| Rejection::bad(format!("bad JSON body: {e}")))?;
    if let Some(id) = &env.request_id {
        if id != request_id {
            return Err(Rejection::bad(format!(
                "body requestId {id:?} differs from X-Amz-Firehose-Request-Id {request_id:?}"
            )));
        }
    }
    env.records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            base64::engine::general_purpose::STANDARD
                .decode(r.data.as_bytes())
                .map_err(|e| Rejection::bad(format!("record {i}: data is not base64: {e}")))
        })
        .collect()
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
        assert_eq!(parse_records(&body, "r").expect("records"), [b"hello".to_vec(), Vec::new()]);
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
        match (parse_records(json.as_bytes(), "r"), want_error) {
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

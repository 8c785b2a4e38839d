//! The serde_json reading of CloudWatch Logs and Firehose JSON payloads: the exact reading the
//! fast envelope scan (`crate::envelope`) declines to.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;

use crate::error::DecodeError;

/// One object of a JSON payload, as serde_json reads it.
pub(crate) enum JsonItem<'a> {
    /// A CloudWatch Logs `CONTROL_MESSAGE`.
    Control,
    /// A log event's `message` (or a Firehose record's), unescaped.
    Text(&'a [u8]),
}

/// The serde_json reading of a CloudWatch Logs / Firehose JSON payload: calls `f` with its items
/// in order, up to the first object that is not valid (its error).
pub(crate) fn json_items(data: &[u8], mut f: impl FnMut(JsonItem<'_>)) -> Result<(), DecodeError> {
    let stream = serde_json::Deserializer::from_slice(data).into_iter::<JsonObject<'_>>();
    for (index, obj) in stream.enumerate() {
        let obj = obj.map_err(|source| DecodeError::Json { index, source })?;
        match (obj.message_type, obj.log_events, obj.message) {
            (Some(t), events, _) => match &*t {
                "CONTROL_MESSAGE" => f(JsonItem::Control),
                "DATA_MESSAGE" => {
                    for ev in events.unwrap_or_default() {
                        f(JsonItem::Text(ev.message.as_bytes()));
                    }
                }
                other => {
                    return Err(DecodeError::UnknownMessageType {
                        index,
                        message_type: other.to_string(),
                    })
                }
            },
            (None, Some(events), _) => {
                for ev in events {
                    f(JsonItem::Text(ev.message.as_bytes()));
                }
            }
            (None, None, Some(message)) => f(JsonItem::Text(message.as_bytes())),
            (None, None, None) => return Err(DecodeError::UnrecognisedJson { index }),
        }
    }
    Ok(())
}

/// Either a CloudWatch Logs envelope or a Firehose record.
#[derive(Deserialize)]
struct JsonObject<'a> {
    #[serde(rename = "messageType", default, borrow, deserialize_with = "opt_cow")]
    message_type: Option<Cow<'a, str>>,
    #[serde(rename = "logEvents", default, borrow)]
    log_events: Option<Vec<LogEvent<'a>>>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    message: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct LogEvent<'a> {
    #[serde(borrow, deserialize_with = "cow")]
    message: Cow<'a, str>,
}

struct CowVisitor;

impl<'de> serde::de::Visitor<'de> for CowVisitor {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// Borrows the string from the input when it has no escapes (no allocation).
fn cow<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Cow<'de, str>, D::Error> {
    d.deserialize_str(CowVisitor)
}

fn opt_cow<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    cow(d).map(Some)
}

//! Which framing an input has: the [`Framing`] names and detection by content.

use std::fmt;
use std::str::FromStr;

/// How one input object or record is packaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Framing {
    /// Detect by content ([`Framing::detect`]).
    #[default]
    Auto,
    /// Plain text lines (an S3 `.log` object, optionally starting with a header line).
    Lines,
    /// Gzip (single or multi-member); the inflated content is detected again.
    Gzip,
    /// CloudWatch Logs subscription envelope(s) (JSON, often gzip-compressed).
    CwLogs,
    /// Firehose direct-put records `{"message":"<line>"}`, one or more.
    Firehose,
    /// A KPL-aggregated Kinesis record (magic `f3 89 9a c2`).
    Kpl,
    /// A Parquet flow-log object as S3 delivers it.
    Parquet,
}

pub(super) const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
/// The first bytes of every gzip member: the magic and compression method 8 (deflate).
pub(super) const GZIP_MEMBER_START: &[u8] = &[0x1f, 0x8b, 0x08];
const KPL_MAGIC: &[u8] = &[0xf3, 0x89, 0x9a, 0xc2];
const PARQUET_MAGIC: &[u8] = b"PAR1";
/// Deepest nesting of framings (KPL holding gzip holding JSON is depth 2).
pub(crate) const MAX_DEPTH: u32 = 4;

impl Framing {
    /// Every framing, in `FromStr` spelling order.
    pub const ALL: [Framing; 7] = [
        Framing::Auto,
        Framing::Lines,
        Framing::Gzip,
        Framing::CwLogs,
        Framing::Firehose,
        Framing::Kpl,
        Framing::Parquet,
    ];

    /// The lowercase name accepted by `FromStr`.
    pub fn name(self) -> &'static str {
        match self {
            Framing::Auto => "auto",
            Framing::Lines => "lines",
            Framing::Gzip => "gzip",
            Framing::CwLogs => "cwlogs",
            Framing::Firehose => "firehose",
            Framing::Kpl => "kpl",
            Framing::Parquet => "parquet",
        }
    }

    /// Detects the framing of `bytes` by content: gzip magic `1f 8b`, `PAR1`, KPL magic
    /// `f3 89 9a c2`, a JSON object (`{`, CloudWatch Logs when it names `messageType`, else
    /// Firehose), otherwise plain lines. Never returns [`Framing::Auto`].
    pub fn detect(bytes: &[u8]) -> Framing {
        if bytes.starts_with(GZIP_MAGIC) {
            return Framing::Gzip;
        }
        if bytes.starts_with(PARQUET_MAGIC) {
            return Framing::Parquet;
        }
        if bytes.starts_with(KPL_MAGIC) {
            return Framing::Kpl;
        }
        let body = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        if first == Some(&b'{') {
            let head = &body[..body.len().min(4096)];
            if memchr::memmem::find(head, b"\"messageType\"").is_some()
                || memchr::memmem::find(head, b"\"logEvents\"").is_some()
            {
                return Framing::CwLogs;
            }
            return Framing::Firehose;
        }
        Framing::Lines
    }
}

impl fmt::Display for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A framing name that `Framing::from_str` does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown framing {0:?} (expected auto, lines, gzip, cwlogs, firehose, kpl or parquet)")]
pub struct UnknownFraming(pub String);

impl FromStr for Framing {
    type Err = UnknownFraming;
    fn from_str(s: &str) -> Result<Framing, UnknownFraming> {
        Framing::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| UnknownFraming(s.to_string()))
    }
}

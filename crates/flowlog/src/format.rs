//! [`Format`]: the ordered list of fields that every line under it follows.

use std::fmt;

use crate::field::{strip_placeholder, Field, ValueType, KNOWN_COUNT};
use crate::validate::Plan;

/// Most fields a format may have (AWS documents fewer than 70).
pub const MAX_FORMAT_FIELDS: usize = 1024;

const ABSENT: u16 = u16::MAX;

/// An ordered list of fields: the layout of every line under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    fields: Vec<Field>,
    /// Names of the [`Field::Unknown`] fields, indexed by their `u16`.
    unknown: Vec<String>,
    /// Position of each known field, by `Field::known_index`; `ABSENT` when missing.
    pos: [u16; KNOWN_COUNT],
    /// The positions whose values are not free text, in order, with their type: what a line of
    /// printable ASCII still has to be checked for.
    typed: Vec<(u16, ValueType)>,
    /// How the decoder's fast path checks those values.
    plan: Plan,
}

/// A format string that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The string names no field.
    #[error("format names no field")]
    Empty,
    /// A token is not a field name (`${` without `}`, stray `$`, ...).
    #[error("bad field token {token:?} at position {position}")]
    BadToken {
        /// The token as written.
        token: String,
        /// Its 0-based position in the format.
        position: usize,
    },
    /// A field appears twice.
    #[error("field {name:?} appears twice in the format")]
    Duplicate {
        /// The repeated field name.
        name: String,
    },
    /// More than [`MAX_FORMAT_FIELDS`] fields.
    #[error("format has {count} fields, more than the {MAX_FORMAT_FIELDS} allowed")]
    TooManyFields {
        /// How many fields the format named.
        count: usize,
    },
}

impl Format {
    /// The default (version 2) format of 14 fields:
    /// `version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes
    /// start end action log-status`.
    pub fn default_v2() -> Format {
        Format::from_fields(&Field::KNOWN[..14]).unwrap_or_else(|_| Format::empty())
    }

    fn empty() -> Format {
        Format {
            fields: Vec::new(),
            unknown: Vec::new(),
            pos: [ABSENT; KNOWN_COUNT],
            typed: Vec::new(),
            plan: Plan::default(),
        }
    }

    /// Builds a format from known fields (a [`Field::Unknown`] here is rejected as a bad token).
    pub fn from_fields(fields: &[Field]) -> Result<Format, FormatError> {
        let mut f = Format::empty();
        for (i, field) in fields.iter().enumerate() {
            match field.known_name() {
                Some(_) => f.push_known(*field)?,
                None => {
                    return Err(FormatError::BadToken { token: field.to_string(), position: i })
                }
            }
        }
        f.finish()
    }

    /// Parses a CreateFlowLogs `LogFormat` string (`${version} ${srcaddr} ...`), an S3 header line
    /// (`version srcaddr ...`) or Parquet column names (`log_status`), separated by whitespace or
    /// commas. Unknown names are kept as [`Field::Unknown`].
    ///
    /// ```
    /// use flowlog::{Field, Format};
    /// let f = Format::parse("${version} ${srcaddr} ${my-new-field}").unwrap();
    /// assert_eq!(f.position(Field::SrcAddr), Some(1));
    /// assert_eq!(f.to_string(), "version srcaddr my-new-field");
    /// ```
    pub fn parse(s: &str) -> Result<Format, FormatError> {
        let mut f = Format::empty();
        let tokens =
            s.split(|c: char| c.is_ascii_whitespace() || c == ',').filter(|t| !t.is_empty());
        for (position, token) in tokens.enumerate() {
            if f.fields.len() >= MAX_FORMAT_FIELDS {
                return Err(FormatError::TooManyFields { count: position + 1 });
            }
            let bad = || FormatError::BadToken { token: token.to_string(), position };
            match Field::from_any_name(token) {
                Some(field) => f.push_known(field)?,
                None => {
                    let name = strip_placeholder(token).ok_or_else(bad)?;
                    let name = name.replace('_', "-");
                    if f.unknown.contains(&name) {
                        return Err(FormatError::Duplicate { name });
                    }
                    let idx = u16::try_from(f.unknown.len()).map_err(|_| bad())?;
                    f.unknown.push(name);
                    f.fields.push(Field::Unknown(idx));
                    f.plan.push(
                        u16::try_from(f.fields.len() - 1).map_err(|_| bad())?,
                        Field::Unknown(idx),
                    );
                }
            }
        }
        f.finish()
    }

    fn push_known(&mut self, field: Field) -> Result<(), FormatError> {
        if let Some(k) = field.known_index() {
            if self.pos[k] != ABSENT {
                return Err(FormatError::Duplicate { name: field.to_string() });
            }
            let at = u16::try_from(self.fields.len())
                .map_err(|_| FormatError::TooManyFields { count: self.fields.len() + 1 })?;
            self.pos[k] = at;
            if field.value_type() != ValueType::Text {
                self.typed.push((at, field.value_type()));
            }
            self.plan.push(at, field);
        }
        self.fields.push(field);
        Ok(())
    }

    fn finish(self) -> Result<Format, FormatError> {
        if self.fields.is_empty() {
            Err(FormatError::Empty)
        } else if self.fields.len() > MAX_FORMAT_FIELDS {
            Err(FormatError::TooManyFields { count: self.fields.len() })
        } else {
            Ok(self)
        }
    }

    /// The fields in order.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True when the format has no field (never, for a format built by this crate).
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The 0-based position of `field`, `None` when the format lacks it. O(1) for known fields
    /// (inlined: for a field known at compile time, one load).
    #[inline(always)]
    pub fn position(&self, field: Field) -> Option<usize> {
        match field.known_index() {
            Some(k) => match self.pos[k] {
                ABSENT => None,
                p => Some(p as usize),
            },
            None => self.fields.iter().position(|f| *f == field),
        }
    }

    /// The positions of the fields whose values are not free text, in order, with their
    /// [`ValueType`].
    #[inline]
    pub(crate) fn typed(&self) -> &[(u16, ValueType)] {
        &self.typed
    }

    /// How the decoder's fast path checks the typed values (`crate::validate`).
    #[inline]
    pub(crate) fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The AWS name of a field of this format (resolves [`Field::Unknown`] through the name table).
    pub fn name_of(&self, field: Field) -> &str {
        match field {
            Field::Unknown(i) => {
                self.unknown.get(i as usize).map(String::as_str).unwrap_or("unknown")
            }
            known => known.known_name().unwrap_or("unknown"),
        }
    }

    /// The field with AWS name `name` (any spelling) in this format, including unknown names.
    pub fn field_named(&self, name: &str) -> Option<Field> {
        if let Some(f) = Field::from_any_name(name) {
            return self.position(f).map(|_| f);
        }
        let name = strip_placeholder(name)?.replace('_', "-");
        let i = self.unknown.iter().position(|n| *n == name)?;
        u16::try_from(i).ok().map(Field::Unknown)
    }

    /// The `${field}` form accepted by CreateFlowLogs `LogFormat`.
    pub fn to_log_format(&self) -> String {
        let mut s = String::new();
        for (i, f) in self.fields.iter().enumerate() {
            if i > 0 {
                s.push(' ');
            }
            s.push_str("${");
            s.push_str(self.name_of(*f));
            s.push('}');
        }
        s
    }
}

impl Default for Format {
    fn default() -> Format {
        Format::default_v2()
    }
}

/// Renders the format as an S3 header line (`version account-id ...`).
impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, field) in self.fields.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(self.name_of(*field))?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Format {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Format, FormatError> {
        Format::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: &str = "version account-id interface-id srcaddr dstaddr srcport dstport protocol \
                      packets bytes start end action log-status";

    fn check(input: &str, expected: Result<&str, FormatError>) {
        let got = Format::parse(input).map(|f| f.to_string());
        assert_eq!(got, expected.map(str::to_string), "{input}");
    }

    #[test]
    fn parse_spellings() {
        check(V2, Ok(V2));
        check(&Format::default_v2().to_log_format(), Ok(V2));
        check(&V2.replace('-', "_"), Ok(V2));
        check("${version} ${vpc-id} ${tcp-flags}\n", Ok("version vpc-id tcp-flags"));
        check("version,srcaddr,  dstaddr", Ok("version srcaddr dstaddr"));
        check("version my_new_field", Ok("version my-new-field"));
        check("", Err(FormatError::Empty));
        check("version version", Err(FormatError::Duplicate { name: "version".into() }));
        check("x x", Err(FormatError::Duplicate { name: "x".into() }));
        check(
            "version ${srcaddr",
            Err(FormatError::BadToken { token: "${srcaddr".into(), position: 1 }),
        );
    }

    #[test]
    fn positions() {
        let f = Format::parse("${srcaddr} ${foo} ${action}").unwrap();
        assert_eq!(f.position(Field::SrcAddr), Some(0));
        assert_eq!(f.position(Field::Action), Some(2));
        assert_eq!(f.position(Field::DstAddr), None);
        assert_eq!(f.position(Field::Unknown(0)), Some(1));
        assert_eq!(f.field_named("foo"), Some(Field::Unknown(0)));
        assert_eq!(f.name_of(Field::Unknown(0)), "foo");
        assert_eq!(f.fields().len(), 3);
        let d = Format::default_v2();
        assert_eq!(d.len(), 14);
        assert_eq!(d.position(Field::LogStatus), Some(13));
    }
}

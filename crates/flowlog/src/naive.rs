//! A naive reference parser (split on spaces, `str::parse`), kept to check the fast one against.
//! Public (hidden) so the fuzz targets can use it; not for production use.

use std::net::IpAddr;

use crate::field::ValueType;
use crate::format::Format;
use crate::line::LineErrorKind;

/// Splits `line` naively: `Ok(values)` exactly when [`crate::LineParser::parse`] accepts it.
pub fn naive_split(
    line: &[u8],
    format: &Format,
    max_line_bytes: usize,
) -> Result<Vec<String>, LineErrorKind> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > max_line_bytes.min(u32::MAX as usize - 1) {
        return Err(LineErrorKind::TooLong { len: line.len(), max: max_line_bytes });
    }
    let s = std::str::from_utf8(line)
        .map_err(|e| LineErrorKind::NotUtf8 { offset: e.valid_up_to() })?;
    if let Some((offset, c)) = s.char_indices().find(|(_, c)| c.is_ascii_control()) {
        return Err(LineErrorKind::ControlByte { offset, byte: c as u8 });
    }
    let values: Vec<String> = s.split(' ').map(str::to_string).collect();
    let (expected, found) = (format.len(), values.len());
    if found < expected {
        Err(LineErrorKind::TooFewFields { expected, found })
    } else if found > expected {
        Err(LineErrorKind::TooManyFields { expected, found })
    } else {
        for (i, (field, v)) in format.fields().iter().zip(&values).enumerate() {
            if v != "-" && !naive_value_ok(field.value_type(), v) {
                let position = u16::try_from(i + 1).unwrap_or(u16::MAX);
                let expected = field.value_type();
                return Err(LineErrorKind::BadValue { field: *field, position, expected });
            }
        }
        Ok(values)
    }
}

/// Whether `s` is a value of type `t`, with the standard library's parsers: the reference for
/// [`ValueType::accepts`].
pub fn naive_value_ok(t: ValueType, s: &str) -> bool {
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match t {
        ValueType::Text => s.bytes().all(|b| b.is_ascii_graphic()),
        ValueType::U8 => digits && s.parse::<u8>().is_ok(),
        ValueType::U16 => digits && s.parse::<u16>().is_ok(),
        ValueType::U64 => digits && s.parse::<u64>().is_ok(),
        ValueType::Addr => s.parse::<IpAddr>().is_ok(),
        ValueType::Action => matches!(s, "ACCEPT" | "REJECT"),
        ValueType::LogStatus => matches!(s, "OK" | "NODATA" | "SKIPDATA"),
        ValueType::FlowDirection => matches!(s, "ingress" | "egress"),
    }
}

/// A numeric value: digits only, then `str::parse::<u64>`.
pub fn naive_u64(s: &str) -> Option<u64> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

/// An address value: `str::parse::<IpAddr>`.
pub fn naive_addr(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

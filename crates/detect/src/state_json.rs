//! The one JSON encoding of every saved detector state ([`crate::DetectorState`] and the
//! per-mode states), so the states cannot drift apart in how they are written or how a bad
//! input is reported.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::DetectError;

/// `value` as compact JSON. The states are plain structs with string map keys, which
/// serde_json always encodes; an empty vector would only come from a state that cannot be
/// written, as before this helper existed.
pub(crate) fn to_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// Decodes what [`to_bytes`] wrote; `what` names the state in the error
/// (`decoding <what>: <serde error>`).
pub(crate) fn from_bytes<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, DetectError> {
    serde_json::from_slice(bytes)
        .map_err(|e| DetectError::InvalidState(format!("decoding {what}: {e}")))
}

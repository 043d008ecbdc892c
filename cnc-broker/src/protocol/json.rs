//! JSON helpers shared by the codecs: Celery-style output and limited parsing.

use std::io;

use serde::Serialize;
use serde_json::Value;

use super::error::DecodeError;

/// A `serde_json` formatter that writes what Python's `json.dumps` writes by
/// default: `", "` between items and `": "` after keys. Workers accept any
/// JSON; this only keeps our bytes close to what Celery itself sends, which
/// makes captures easy to compare.
#[derive(Debug, Clone, Copy, Default)]
pub struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }
}

/// Serialise `value` with [`PythonFormatter`].
pub fn to_python_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    // Serialising plain data (Value, derived structs with string keys) into a
    // Vec cannot fail; an error would mean a non-string map key, which none
    // of our types have. Fall back to `null` rather than panic.
    if value.serialize(&mut ser).is_err() {
        return b"null".to_vec();
    }
    out
}

/// Parse `bytes` as JSON, classifying failures (`what` names the part).
pub(crate) fn parse_value(what: &'static str, bytes: &[u8]) -> Result<Value, DecodeError> {
    serde_json::from_slice(bytes).map_err(|e| DecodeError::json(what, &e))
}

/// Parse `bytes` into `T`, classifying failures.
pub(crate) fn parse_as<'a, T: serde::Deserialize<'a>>(
    what: &'static str,
    bytes: &'a [u8],
) -> Result<T, DecodeError> {
    serde_json::from_slice(bytes).map_err(|e| DecodeError::json(what, &e))
}

/// Deserialise `null` as the type's default (`[]`, `{}`): Celery writes
/// `"children": null` on some results, and hand-made signatures may carry
/// `"args": null`.
pub(crate) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + serde::Deserialize<'de>,
{
    use serde::Deserialize as _;
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

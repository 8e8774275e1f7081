//! Namespace and topic names.
//!
//! A name is 1 to `max` bytes of `[A-Za-z0-9._-]`. The rule keeps names safe in URL paths,
//! metric labels, file names and log lines without escaping, and leaves `/` free as a
//! separator between a namespace and a topic.

use std::fmt;
use std::ops::Deref;

use thiserror::Error;

/// The default and largest allowed length of a namespace or topic name, in bytes.
pub const NAME_BYTES_MAX: usize = 64;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("name is empty")]
    Empty,
    /// The name is longer than the limit.
    #[error("name is {len} bytes, over the limit of {max}")]
    TooLong {
        /// The name's length in bytes.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The name holds a byte outside `[A-Za-z0-9._-]`.
    #[error("name has a byte 0x{byte:02x} at offset {offset}; allowed are A-Z a-z 0-9 . _ -")]
    BadByte {
        /// The offending byte.
        byte: u8,
        /// Where it stands.
        offset: usize,
    },
}

/// Checks a namespace or topic name against the rules, with `max` bytes at most
/// (clamped to [`NAME_BYTES_MAX`]).
pub fn validate_name(name: &str, max: usize) -> Result<(), NameError> {
    let max = max.min(NAME_BYTES_MAX);
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > max {
        return Err(NameError::TooLong {
            len: name.len(),
            max,
        });
    }
    match name.bytes().position(|b| !is_name_byte(b)) {
        Some(offset) => Err(NameError::BadByte {
            byte: name.as_bytes()[offset],
            offset,
        }),
        None => Ok(()),
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'
}

/// A namespace or topic name that passed [`validate_name`]. The wire decoders return names
/// as this type, so code behind them never checks a name twice ("parse, don't validate").
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Box<str>);

impl Name {
    /// Checks `name` (at most `max` bytes, clamped to [`NAME_BYTES_MAX`]).
    pub fn parse(name: &str, max: usize) -> Result<Self, NameError> {
        validate_name(name, max)?;
        Ok(Self(name.into()))
    }

    /// A name the caller already knows is valid (taken apart from a checked key, say): checked
    /// only in debug builds. A wrong name here is not memory-unsafe, but it would go on the
    /// wire unchecked, so use [`Name::parse`] for anything from outside.
    pub fn new_unchecked(name: &str) -> Self {
        debug_assert_eq!(validate_name(name, NAME_BYTES_MAX), Ok(()));
        Self(name.into())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for Name {
    type Error = NameError;
    /// Checks `name` against the largest allowed length.
    fn try_from(name: &str) -> Result<Self, NameError> {
        Self::parse(name, NAME_BYTES_MAX)
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;
    fn try_from(name: String) -> Result<Self, NameError> {
        validate_name(&name, NAME_BYTES_MAX)?;
        Ok(Self(name.into_boxed_str()))
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;

    #[test]
    fn accepts_and_rejects() {
        assert_eq!(validate_name("chat.room_1-a", 64), Ok(()));
        assert_eq!(validate_name("", 64), Err(NameError::Empty));
        assert_eq!(
            validate_name("a/b", 64),
            Err(NameError::BadByte {
                byte: b'/',
                offset: 1
            })
        );
        assert_eq!(
            validate_name("abcd", 3),
            Err(NameError::TooLong { len: 4, max: 3 })
        );
        let long = "x".repeat(65);
        assert!(matches!(
            validate_name(&long, 1000),
            Err(NameError::TooLong { max: 64, .. })
        ));
        assert!(validate_name("é", 64).is_err());
    }

    #[test]
    fn a_name_is_only_made_from_a_valid_string() {
        assert_eq!(
            Name::try_from("chat").map(|n| n.to_string()),
            Ok("chat".into())
        );
        assert_eq!(
            Name::parse("abcd", 3),
            Err(NameError::TooLong { len: 4, max: 3 })
        );
        assert!(Name::try_from(String::from("a b")).is_err());
        assert_eq!(Name::try_from("room-1").unwrap(), "room-1");
    }

    quickcheck! {
        fn agrees_with_reference(s: String) -> bool {
            let reference = !s.is_empty()
                && s.len() <= NAME_BYTES_MAX
                && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            validate_name(&s, NAME_BYTES_MAX).is_ok() == reference
        }
    }
}

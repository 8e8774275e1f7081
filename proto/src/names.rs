//! Namespace and topic names.
//!
//! A name is 1 to `max` bytes of `[A-Za-z0-9._-]`. The rule keeps names safe in URL paths,
//! metric labels, file names and log lines without escaping, and leaves `/` free as a
//! separator between a namespace and a topic.

use std::fmt;
use std::ops::Deref;

use arrayvec::ArrayString;

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
///
/// Held inline (no allocation: decoding a publish allocates nothing for its names); compares,
/// orders and hashes as its text.
#[derive(Clone)]
pub struct Name(Repr);

#[derive(Clone)]
enum Repr {
    /// Up to [`NAME_BYTES_MAX`] bytes: every checked name.
    Inline(ArrayString<NAME_BYTES_MAX>),
    /// A longer string given to [`Name::new_unchecked`] (a caller's bug; kept total).
    Heap(Box<str>),
}

impl Name {
    /// Checks `name` (at most `max` bytes, clamped to [`NAME_BYTES_MAX`]).
    pub fn parse(name: &str, max: usize) -> Result<Self, NameError> {
        validate_name(name, max)?;
        Ok(Self::store(name))
    }

    /// A name the caller already knows is valid (taken apart from a checked key, say): checked
    /// only in debug builds. A wrong name here is not memory-unsafe, but it would go on the
    /// wire unchecked, so use [`Name::parse`] for anything from outside.
    pub fn new_unchecked(name: &str) -> Self {
        debug_assert_eq!(validate_name(name, NAME_BYTES_MAX), Ok(()));
        Self::store(name)
    }

    fn store(name: &str) -> Self {
        match ArrayString::from(name) {
            Ok(inline) => Self(Repr::Inline(inline)),
            Err(_) => Self(Repr::Heap(name.into())),
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline(s) => s,
            Repr::Heap(s) => s,
        }
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Name {}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::hash::Hash for Name {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
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
        Self::parse(&name, NAME_BYTES_MAX)
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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

    #[test]
    fn names_compare_order_and_hash_as_their_text() {
        use std::collections::hash_map::DefaultHasher;
        use std::hash::{Hash, Hasher};
        let h = |x: &dyn Fn(&mut DefaultHasher)| {
            let mut s = DefaultHasher::new();
            x(&mut s);
            s.finish()
        };
        let (a, b) = (Name::new_unchecked("ab"), Name::new_unchecked("b"));
        assert!(a < b, "as text: \"ab\" < \"b\"");
        assert_eq!(h(&|s| a.hash(s)), h(&|s| "ab".hash(s)));
        let max = "m".repeat(NAME_BYTES_MAX);
        assert_eq!(Name::try_from(max.as_str()).unwrap().as_str(), max);
        // Past the limit only through new_unchecked in release builds: kept whole.
        #[cfg(not(debug_assertions))]
        {
            let long = "l".repeat(NAME_BYTES_MAX + 1);
            assert_eq!(Name::new_unchecked(&long).as_str(), long);
        }
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

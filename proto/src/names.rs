//! Namespace and topic names.
//!
//! A name is 1 to `max` bytes of `[A-Za-z0-9._-]`. The rule keeps names safe in URL paths,
//! metric labels, file names and log lines without escaping, and leaves `/` free as a
//! separator between a namespace and a topic.

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

    quickcheck! {
        fn agrees_with_reference(s: String) -> bool {
            let reference = !s.is_empty()
                && s.len() <= NAME_BYTES_MAX
                && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            validate_name(&s, NAME_BYTES_MAX).is_ok() == reference
        }
    }
}

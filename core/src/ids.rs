//! Newtypes for the numbers and names the engine passes around.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrayvec::ArrayString;
use fanfare_proto::{validate_name, Name, NameError};
use thiserror::Error;

/// A shard's index within its node, `0..shards`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

/// A topic's sequence number: starts at 1 and grows by 1 per published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Seq(pub u64);

/// Changes whenever a topic's sequence restarts; with a [`Seq`] it names one message forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Epoch(pub u64);

/// Names one subscription within its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubId(pub u64);

/// Names a topic on a shard that has local subscribers to it. Every subscriber of the topic on
/// that shard shares it, so a frame that carries it can be encoded once for all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalTopicId(pub u64);

/// A topic key: (namespace, topic), both already validated.
///
/// Stored as one shared string `namespace/topic` (`/` is not a name byte), so cloning a key
/// to send it to another shard costs one reference count.
///
/// It hashes and compares as its joined string (`Borrow<str>`), so a shard's maps can be
/// asked with names borrowed from a read buffer ([`TopicKey::with_joined`]) and a publish to
/// a known topic reuses its key instead of allocating one.
#[derive(Clone, PartialEq, Eq)]
pub struct TopicKey {
    joined: Arc<str>,
    ns_len: u8,
}

impl Hash for TopicKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As the joined string, so `Borrow<str>` lookups find it (`ns_len` follows from the
        // string: the first `/`).
        self.joined.hash(state);
    }
}

impl Borrow<str> for TopicKey {
    fn borrow(&self) -> &str {
        &self.joined
    }
}

/// Why a (namespace, topic) pair is not a topic key.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid {field}: {source}")]
pub struct BadTopicName {
    /// `namespace` or `topic`.
    pub field: &'static str,
    /// What is wrong with it.
    pub source: NameError,
}

impl TopicKey {
    /// Checks both names (at most `name_bytes_max` bytes each, see
    /// [`fanfare_proto::validate_name`]) and joins them into a key. For names from URLs and
    /// other text; names from the wire decoders are checked already ([`TopicKey::from_names`]).
    pub fn parse(
        namespace: &str,
        topic: &str,
        name_bytes_max: usize,
    ) -> Result<Self, BadTopicName> {
        validate_name(namespace, name_bytes_max).map_err(|source| BadTopicName {
            field: "namespace",
            source,
        })?;
        validate_name(topic, name_bytes_max).map_err(|source| BadTopicName {
            field: "topic",
            source,
        })?;
        Ok(Self::new_unchecked(namespace, topic))
    }

    /// A key from names the wire decoders checked (no second check).
    pub fn from_names(namespace: &Name, topic: &Name) -> Self {
        Self::new_unchecked(namespace, topic)
    }

    /// Builds a key from names that [`fanfare_proto::validate_name`] accepted.
    pub(crate) fn new_unchecked(namespace: &str, topic: &str) -> Self {
        debug_assert!(namespace.len() <= fanfare_proto::NAME_BYTES_MAX);
        let mut s = String::with_capacity(namespace.len() + 1 + topic.len());
        s.push_str(namespace);
        s.push('/');
        s.push_str(topic);
        TopicKey {
            joined: s.into(),
            // Names are at most NAME_BYTES_MAX (64) bytes.
            ns_len: namespace.len() as u8,
        }
    }

    /// Calls `f` with `namespace/topic` joined in a buffer on the stack (no allocation), for
    /// looking a key up by borrowed names.
    pub fn with_joined<R>(namespace: &Name, topic: &Name, f: impl FnOnce(&str) -> R) -> R {
        let mut joined = ArrayString::<{ 2 * fanfare_proto::NAME_BYTES_MAX + 1 }>::new();
        let fits = joined.try_push_str(namespace).is_ok()
            && joined.try_push('/').is_ok()
            && joined.try_push_str(topic).is_ok();
        if fits {
            f(&joined)
        } else {
            // Names from the decoders are at most NAME_BYTES_MAX; anything longer is joined
            // the slow way.
            f(Self::new_unchecked(namespace, topic).as_str())
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.joined[..usize::from(self.ns_len)]
    }

    /// The topic within the namespace.
    pub fn topic(&self) -> &str {
        &self.joined[usize::from(self.ns_len) + 1..]
    }

    /// The namespace as a checked [`Name`] (for encoding).
    pub fn namespace_name(&self) -> Name {
        // Both parts of a key were checked when it was made.
        Name::new_unchecked(self.namespace())
    }

    /// The topic as a checked [`Name`] (for encoding).
    pub fn topic_name(&self) -> Name {
        Name::new_unchecked(self.topic())
    }

    /// `namespace/topic`: the bytes placement hashes.
    pub fn as_str(&self) -> &str {
        &self.joined
    }
}

impl fmt::Debug for TopicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TopicKey({})", self.joined)
    }
}

impl fmt::Display for TopicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.joined)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parts() {
        let k = TopicKey::new_unchecked("chat", "room-1");
        assert_eq!(k.namespace(), "chat");
        assert_eq!(k.topic(), "room-1");
        assert_eq!(k.as_str(), "chat/room-1");
        assert_ne!(k, TopicKey::new_unchecked("chat.r", "oom-1"));
    }

    #[test]
    fn a_key_is_found_by_its_borrowed_names() {
        let k = TopicKey::new_unchecked("chat", "room-1");
        let mut m = ahash::AHashMap::new();
        m.insert(k.clone(), 7);
        let (ns, t) = (Name::new_unchecked("chat"), Name::new_unchecked("room-1"));
        let found = TopicKey::with_joined(&ns, &t, |j| {
            m.get_key_value(j).map(|(k, v)| (k.clone(), *v))
        });
        assert_eq!(found, Some((k, 7)));
        let other = Name::new_unchecked("room-2");
        assert_eq!(
            TopicKey::with_joined(&ns, &other, |j| m.get(j).copied()),
            None
        );
        let long = "n".repeat(fanfare_proto::NAME_BYTES_MAX);
        let (ln, lt) = (Name::new_unchecked(&long), Name::new_unchecked(&long));
        let key = TopicKey::new_unchecked(&long, &long);
        assert!(TopicKey::with_joined(&ln, &lt, |j| j == key.as_str()));
    }
}

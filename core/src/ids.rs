//! Newtypes for the numbers and names the engine passes around.

use std::fmt;
use std::sync::Arc;

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
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TopicKey {
    joined: Arc<str>,
    ns_len: u8,
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
}

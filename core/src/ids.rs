//! Newtypes for the numbers and names the engine passes around.

use std::fmt;
use std::sync::Arc;

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

impl TopicKey {
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

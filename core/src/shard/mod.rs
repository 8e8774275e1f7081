//! A shard: one executor's topics and subscriptions, and the loops that change them.
//!
//! A shard plays both roles of the design inside one node, and, in a cluster, a third:
//! - **owner** (`owner.rs`) of the topics placement gives it: it assigns sequences, keeps
//!   history, and sends each message once to every shard that has subscribers for the topic;
//! - **router** (`router.rs`) for the subscriptions made on it: it keeps one interest per
//!   (topic, shard) at the owner however many local subscribers there are, and fans each
//!   message out to them through their [`Sink`](crate::Sink)s;
//! - **upstream** (`upstream.rs`) for topics owned by other nodes, reached through the
//!   network crate's node links.
//!
//! The shard's data is held by five parts, each owning its data behind a small API and
//! checking its invariants (`owned.rs`, `local.rs`, `mesh.rs`'s `MeshPort`,
//! `upstream_port.rs`, `disk.rs`'s `Store`), composed in one `State` (`state.rs`) behind
//! `Rc<RefCell<..>>`, touched only by this shard's thread; a borrow is never held across an
//! `.await`. Each role's file composes them in methods on `State`. Other shards are reached
//! only by `MeshMsg`s over glommio's lock-free channel mesh, through a per-peer outbox
//! (`mesh.rs`) that a flusher task drains in batches.
//! `presence.rs` carries presence shares up to owners and their events down.
//! `position.rs` holds the pure rule for where a subscriber starts; `run.rs` the loops and
//! shutdown. The embedder's API is [`ShardHandle`] (`handle.rs`); node links use
//! [`ClusterPort`] (`port.rs`).

mod catchup;
mod datadir;
mod dedup;
mod disk;
mod handle;
mod local;
mod mesh;
mod owned;
mod owner;
mod port;
mod position;
mod presence;
mod router;
mod run;
mod state;
mod store;
#[cfg(test)]
mod tests;
mod upstream;
mod upstream_port;

pub(crate) use datadir::{check_layout, lock_data_dir, DataDirLock};
pub use disk::FetchCallback;
pub use disk::PublishCallback;
pub use handle::{Hold, LaterPublish, PendingPublish, ShardHandle, StartedPublish};
pub use owned::OwnedTopicInfo;
pub use port::ClusterPort;
pub use run::ShardHook;
pub(crate) use run::{run, Boot, Cmd, Ctl};

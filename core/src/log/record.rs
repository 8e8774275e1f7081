//! The on-disk record format of the shard log, and the scan that reads it back.
//!
//! A record is a 48-byte header and a body, padded to 8 bytes:
//!
//! ```text
//! 0  magic u32 ("FFLR")      4  header CRC32C u32 (over bytes 8..48 and the topic)
//! 8  body length u32         12 kind u8, reserved u8, topic length u16
//! 16 epoch u64               24 sequence u64
//! 32 timestamp (us) u64      40 publisher length u16, key length u16, body CRC32C u32
//! 48 body: topic | publisher | idempotency key | payload, then zeros to a multiple of 8
//! ```
//!
//! Two checksums, so damage is precise where it can be: a body that fails its CRC under a
//! header that passes (the header's covers the topic too) names exactly which message was lost
//! (topic, epoch, sequence); a header that fails names nothing, and the reader says so.
//! Integers are little-endian.
//!
//! A `Commit` record ends every group commit (see `log/mod.rs`): it tells a torn tail (a
//! batch that was never acknowledged) from damage to synced data (anything that fails before
//! a valid record further on).

/// Bytes before a record's body.
pub const HEADER_BYTES: usize = 48;
/// Records start on multiples of this.
pub const ALIGN: usize = 8;
/// Marks the start of a record ("FFLR").
pub const MAGIC: u32 = u32::from_le_bytes(*b"FFLR");
/// The largest body a record may have (a payload's limit is far below it).
pub const BODY_BYTES_MAX: usize = 64 << 20;

/// What a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A message of a topic.
    Message = 1,
    /// The end of a group commit: every record before it was written in the same batch.
    Commit = 2,
}

/// A record as appended and as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// A message or a commit.
    pub kind: Kind,
    /// `ns/topic` (empty for a commit).
    pub topic: Vec<u8>,
    /// The topic's epoch.
    pub epoch: u64,
    /// The message's sequence (for a commit: the records in its batch).
    pub seq: u64,
    /// Publication time, microseconds since the Unix epoch.
    pub timestamp_us: u64,
    /// Who published it, for idempotency (empty: unknown).
    pub publisher: Vec<u8>,
    /// The publisher's idempotency key (empty: none).
    pub key: Vec<u8>,
    /// The message.
    pub payload: Vec<u8>,
}

impl Record {
    /// The commit record that ends a batch of `records` records, whose bytes (`batch`, the
    /// records before it) start at `start` in the segment: it carries the batch's start and
    /// CRC32C, so a reader can tell a batch that reached the disk whole.
    pub fn commit(records: u64, start: u64, batch: &[u8]) -> Self {
        let mut proof = start.to_le_bytes().to_vec();
        proof.extend_from_slice(&crc32c::crc32c(batch).to_le_bytes());
        Record {
            kind: Kind::Commit,
            topic: Vec::new(),
            epoch: 0,
            seq: records,
            timestamp_us: 0,
            publisher: Vec::new(),
            key: Vec::new(),
            payload: proof,
        }
    }

    /// The record's fields, borrowed (what [`RecordRef::encode`] writes).
    pub fn as_ref(&self) -> RecordRef<'_> {
        RecordRef {
            kind: self.kind,
            topic: &self.topic,
            epoch: self.epoch,
            seq: self.seq,
            timestamp_us: self.timestamp_us,
            publisher: &self.publisher,
            key: &self.key,
            payload: &self.payload,
        }
    }

    /// Bytes the record takes on disk, padding included.
    pub fn encoded_len(&self) -> usize {
        self.as_ref().encoded_len()
    }

    /// Appends the record's bytes to `out`. Field lengths past the format's limits are an
    /// error (nothing is appended).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), FormatError> {
        self.as_ref().encode(out)
    }
}

/// A record's fields borrowed from wherever they live (a publish appends one without copying
/// its names and payload into a [`Record`] first).
#[derive(Clone, Copy, Debug)]
pub struct RecordRef<'a> {
    /// A message or a commit.
    pub kind: Kind,
    /// `ns/topic` (empty for a commit).
    pub topic: &'a [u8],
    /// The topic's epoch.
    pub epoch: u64,
    /// The message's sequence (for a commit: the records in its batch).
    pub seq: u64,
    /// Publication time, microseconds since the Unix epoch.
    pub timestamp_us: u64,
    /// Who published it (empty: unknown).
    pub publisher: &'a [u8],
    /// The publisher's idempotency key (empty: none).
    pub key: &'a [u8],
    /// The message.
    pub payload: &'a [u8],
}

impl RecordRef<'_> {
    fn body_len(&self) -> usize {
        self.topic.len() + self.publisher.len() + self.key.len() + self.payload.len()
    }

    /// Bytes the record takes on disk, padding included.
    pub fn encoded_len(&self) -> usize {
        (HEADER_BYTES + self.body_len()).next_multiple_of(ALIGN)
    }

    /// Appends the record's bytes to `out`. Field lengths past the format's limits are an
    /// error (nothing is appended).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), FormatError> {
        let body = self.body_len();
        if self.topic.len() > usize::from(u16::MAX)
            || self.publisher.len() > usize::from(u16::MAX)
            || self.key.len() > usize::from(u16::MAX)
            || body > BODY_BYTES_MAX
        {
            return Err(FormatError::TooLarge);
        }
        let start = out.len();
        out.reserve(self.encoded_len());
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[0; 4]); // header CRC, below
                                        // The casts are within range: checked above.
        out.extend_from_slice(&(body as u32).to_le_bytes());
        out.push(self.kind as u8);
        out.push(0);
        out.extend_from_slice(&(self.topic.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.timestamp_us.to_le_bytes());
        out.extend_from_slice(&(self.publisher.len() as u16).to_le_bytes());
        out.extend_from_slice(&(self.key.len() as u16).to_le_bytes());
        let mut bcrc = crc32c::crc32c(self.topic);
        bcrc = crc32c::crc32c_append(bcrc, self.publisher);
        bcrc = crc32c::crc32c_append(bcrc, self.key);
        bcrc = crc32c::crc32c_append(bcrc, self.payload);
        out.extend_from_slice(&bcrc.to_le_bytes());
        let hcrc = crc32c::crc32c_append(
            crc32c::crc32c(&out[start + 8..start + HEADER_BYTES]),
            self.topic,
        );
        out[start + 4..start + 8].copy_from_slice(&hcrc.to_le_bytes());
        out.extend_from_slice(self.topic);
        out.extend_from_slice(self.publisher);
        out.extend_from_slice(self.key);
        out.extend_from_slice(self.payload);
        out.resize(start + self.encoded_len(), 0);
        Ok(())
    }
}

/// A record that cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// A field is longer than its length field can say.
    #[error("a record field is longer than the log format allows")]
    TooLarge,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// What reading one position found.
enum At {
    /// A whole, valid record, and its length on disk.
    Valid(Record, usize),
    /// A valid header whose body fails its CRC (or runs past the end): exactly this message.
    BadBody {
        topic: Vec<u8>,
        epoch: u64,
        seq: u64,
        len: usize,
    },
    /// Nothing valid starts here.
    Invalid,
}

fn read_at(b: &[u8], at: usize) -> At {
    let Some(h) = b.get(at..at + HEADER_BYTES) else {
        return At::Invalid;
    };
    if u32_at(h, 0) != MAGIC {
        return At::Invalid;
    }
    let body = u32_at(h, 8) as usize;
    let (tl, pl, kl) = (
        usize::from(u16_at(h, 14)),
        usize::from(u16_at(h, 40)),
        usize::from(u16_at(h, 42)),
    );
    let topic_at = at + HEADER_BYTES;
    let Some(topic) = b.get(topic_at..topic_at + tl) else {
        return At::Invalid;
    };
    if crc32c::crc32c_append(crc32c::crc32c(&h[8..]), topic) != u32_at(h, 4) {
        return At::Invalid;
    }
    let kind = match h[12] {
        1 => Kind::Message,
        2 => Kind::Commit,
        _ => return At::Invalid,
    };
    if body > BODY_BYTES_MAX || tl + pl + kl > body {
        return At::Invalid;
    }
    let (epoch, seq) = (u64_at(h, 16), u64_at(h, 24));
    let len = (HEADER_BYTES + body).next_multiple_of(ALIGN);
    match b.get(topic_at..topic_at + body) {
        // Whole means with its padding: where it ends is where the next record starts, and
        // appends continue. A segment cut inside the padding (by hand, or a filesystem's
        // repair) ends in a record that is not whole: recovery read past the bytes there were.
        Some(x) if at + len <= b.len() && crc32c::crc32c(x) == u32_at(h, 44) => At::Valid(
            Record {
                kind,
                topic: topic.to_vec(),
                epoch,
                seq,
                timestamp_us: u64_at(h, 32),
                publisher: x[tl..tl + pl].to_vec(),
                key: x[tl + pl..tl + pl + kl].to_vec(),
                payload: x[tl + pl + kl..].to_vec(),
            },
            len,
        ),
        // The header and the topic passed their checksum: exactly this message is lost.
        _ => At::BadBody {
            topic: topic.to_vec(),
            epoch,
            seq,
            len,
        },
    }
}

/// The record starting at byte `at` of `b`, if a whole valid one starts there (both checksums
/// pass): how catch-up reads a record it has the place of.
pub fn decode_at(b: &[u8], at: usize) -> Option<Record> {
    match read_at(b, at) {
        At::Valid(r, _) => Some(r),
        _ => None,
    }
}

/// Damage found inside written data: records that were there and cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Damage {
    /// One message, named by its header (its body failed its checksum).
    Message {
        /// Its topic (`ns/topic`).
        topic: Vec<u8>,
        /// Its epoch.
        epoch: u64,
        /// Its sequence.
        seq: u64,
    },
    /// Bytes no valid header covers, between two valid records: messages of unknown topics.
    Unknown {
        /// Where the unreadable bytes start in the segment.
        from: usize,
        /// Where the next valid record starts.
        to: usize,
        /// How many messages the bytes held, when the batch around them says so: its commit
        /// record (intact, after them) counts the batch's messages, and the ones read back
        /// are the rest; 0 when the bytes are exactly the commit record before a whole batch.
        /// `None`: not known.
        lost: Option<u64>,
    },
}

/// Bytes a commit record takes on disk (its payload: the batch's start and CRC).
const COMMIT_BYTES: usize = (HEADER_BYTES + 12).next_multiple_of(ALIGN);

/// The unit a torn write leaves whole or not at all (a sector).
const SECTOR: usize = 512;

/// Whether bad bytes `b[from..to]` look torn rather than damaged: some sector's share of them
/// is all zeros (a block of the batch that never reached the disk reads as the zeros the
/// segment was prepared with, or as the zeros after the old tail of a rewritten block). A flipped
/// bit in written data leaves its sectors non-zero.
fn looks_torn(b: &[u8], from: usize, to: usize) -> bool {
    let mut at = from;
    while at < to {
        let end = (at / SECTOR + 1) * SECTOR;
        let end = end.min(to);
        if b[at..end].iter().all(|&x| x == 0) {
            return true;
        }
        at = end;
    }
    false
}

/// What a segment holds.
#[derive(Debug, Default)]
pub struct Scan {
    /// Every valid record, with its offset, in order.
    pub records: Vec<(usize, Record)>,
    /// Where the valid data ends: appends continue here (a torn tail after it is cut).
    pub end: usize,
    /// Damage before `end` (never silently skipped).
    pub damage: Vec<Damage>,
    /// Records after the last commit record: written, never acknowledged (a batch cut short).
    pub uncommitted: usize,
}

/// Whether a whole batch lies at or after `from`: a valid commit record whose batch (from its
/// recorded start to the commit) passes its CRC and starts at or after `from`. Batches are
/// written one at a time, each after the previous one's sync, so a whole batch after bad
/// bytes proves those bytes had been synced.
fn whole_batch_after(b: &[u8], from: usize) -> bool {
    (from..b.len().saturating_sub(HEADER_BYTES))
        .step_by(ALIGN)
        .any(|i| match read_at(b, i) {
            At::Valid(r, _) if r.kind == Kind::Commit && r.payload.len() == 12 => {
                let start = u64_at(&r.payload, 0) as usize;
                let crc = u32_at(&r.payload, 8);
                start >= from && start <= i && crc32c::crc32c(&b[start..i]) == crc
            }
            _ => false,
        })
}

/// Whether a valid commit record starts at or after `from`.
fn commit_after(b: &[u8], from: usize) -> bool {
    (from..b.len().saturating_sub(HEADER_BYTES))
        .step_by(ALIGN)
        .any(|i| matches!(read_at(b, i), At::Valid(r, _) if r.kind == Kind::Commit))
}

/// Reads a segment's bytes: every valid record; damage where invalid bytes lie before a whole
/// later batch (so they had been synced), or before any valid record in a `closed` segment
/// (not the last one); and, from the first invalid bytes no whole batch follows, a torn tail
/// that is cut (`end`).
///
/// In the open segment's last batch, damage and a torn write can look alike: when its commit
/// record is on disk but the batch is not whole, bad bytes that look torn (a sector's share of
/// them all zeros) cut the batch from there and are reported as damage (a torn
/// write costs a needless report, never a silent loss); bad bytes with no zero sector are
/// damage to written data, and every valid record after them is kept. A batch without its
/// commit record was never acknowledged and is cut silently.
pub fn scan(b: &[u8], closed: bool) -> Scan {
    let mut s = Scan::default();
    let mut at = 0;
    let mut since_commit = 0;
    // Where each entry of `s.damage` starts.
    let mut damage_at = Vec::new();
    while at + HEADER_BYTES <= b.len() {
        match read_at(b, at) {
            At::Valid(r, len) => {
                if r.kind == Kind::Commit {
                    since_commit = 0;
                } else {
                    since_commit += 1;
                }
                s.records.push((at, r));
                at += len;
                s.end = at;
            }
            bad => {
                // Look for the next valid record: if there is one, what lies between was
                // written and synced before it, and is damage; if not, this is the tail.
                let Some(next) = (at + ALIGN..b.len())
                    .step_by(ALIGN)
                    .find(|&i| matches!(read_at(b, i), At::Valid(..)))
                else {
                    break;
                };
                // In the open segment, unless a commit record follows, all of it is a batch
                // that never completed (never acknowledged): a torn tail, whatever pieces of
                // it reached the disk. A closed segment has no torn tail: every batch in it
                // was synced before the next segment was opened.
                if !closed && !whole_batch_after(b, at) {
                    if !commit_after(b, next) {
                        break;
                    }
                    // A commit record after them whose batch is not whole: a batch torn before
                    // its sync whose commit block reached the disk, or a synced batch damaged
                    // since. Torn-looking bytes are cut and reported; others are damage.
                    if looks_torn(b, at, next) {
                        damage_at.push(at);
                        s.damage.push(Damage::Unknown {
                            from: at,
                            to: b.len(),
                            lost: None,
                        });
                        break;
                    }
                }
                damage_at.push(at);
                s.damage.push(match bad {
                    At::BadBody {
                        topic,
                        epoch,
                        seq,
                        len,
                    } if at + len == next => Damage::Message { topic, epoch, seq },
                    _ => Damage::Unknown {
                        from: at,
                        to: next,
                        lost: None,
                    },
                });
                at = next;
            }
        }
    }
    s.uncommitted = since_commit;
    count_lost(&mut s, &damage_at);
    s
}

/// Fills in how many messages each [`Damage::Unknown`] held, where the batch around it says:
/// the first valid commit record after the bad bytes counts its batch's messages; if that
/// batch starts at or before them, the messages lost there are its count less the ones read
/// back and the ones named by other damage inside it. Bad bytes that are exactly one commit
/// record, right before a batch that starts where they end, held no message.
fn count_lost(s: &mut Scan, damage_at: &[usize]) {
    if !s.damage.iter().any(|d| matches!(d, Damage::Unknown { .. })) {
        return; // the common case: nothing to count, no pass over the records
    }
    let commits: Vec<(usize, u64, u64)> = s
        .records
        .iter()
        .filter(|(_, r)| r.kind == Kind::Commit && r.payload.len() == 12)
        .map(|(at, r)| (*at, u64_at(&r.payload, 0), r.seq))
        .collect();
    let named: Vec<usize> = s
        .damage
        .iter()
        .zip(damage_at)
        .filter(|(d, _)| matches!(d, Damage::Message { .. }))
        .map(|(_, &at)| at)
        .collect();
    let unknown_at: Vec<(usize, usize)> = s
        .damage
        .iter()
        .filter_map(|d| match d {
            Damage::Unknown { from, to, .. } => Some((*from, *to)),
            Damage::Message { .. } => None,
        })
        .collect();
    for d in &mut s.damage {
        let Damage::Unknown { from, to, lost } = d else {
            continue;
        };
        let (from, to) = (*from, *to);
        let Some(&(commit_at, start, count)) = commits.iter().find(|c| c.0 >= to) else {
            continue;
        };
        let start = start as usize;
        if start == to && to - from == COMMIT_BYTES {
            *lost = Some(0);
        } else if start <= from {
            // Only when this is the batch's one stretch of unknown bytes.
            if unknown_at
                .iter()
                .any(|&(f, t)| (f, t) != (from, to) && f >= start && f < commit_at)
            {
                continue;
            }
            let read = s
                .records
                .iter()
                .filter(|(at, r)| r.kind == Kind::Message && *at >= start && *at < commit_at)
                .count() as u64;
            let other = named
                .iter()
                .filter(|&&at| at >= start && at < commit_at)
                .count() as u64;
            *lost = count.checked_sub(read + other);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str, seq: u64, payload: &[u8]) -> Record {
        Record {
            kind: Kind::Message,
            topic: topic.as_bytes().to_vec(),
            epoch: 7,
            seq,
            timestamp_us: 1_700_000_000_000_000 + seq,
            publisher: b"p1".to_vec(),
            key: if seq & 1 == 0 {
                b"k".to_vec()
            } else {
                Vec::new()
            },
            payload: payload.to_vec(),
        }
    }

    /// The records as one batch, closed by a commit record.
    fn log_of(records: &[Record]) -> Vec<u8> {
        let mut b = Vec::new();
        for r in records {
            r.encode(&mut b).unwrap();
        }
        Record::commit(records.len() as u64, 0, &b)
            .encode(&mut b)
            .unwrap();
        b
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_cut() {
        let rs = vec![msg("ns/a", 1, b"hello"), msg("ns/b", 2, &[9; 100])];
        let mut b = log_of(&rs);
        let whole = b.len();
        let s = scan(&b, false);
        let back: Vec<Record> = s.records.iter().map(|(_, r)| r.clone()).take(2).collect();
        assert_eq!(back, rs);
        assert_eq!((s.end, s.damage.len(), s.uncommitted), (whole, 0, 0));
        // Half a record more, then zeros (what a torn write leaves).
        let mut more = Vec::new();
        msg("ns/a", 3, &[1; 300]).encode(&mut more).unwrap();
        b.extend_from_slice(&more[..150]);
        b.resize(b.len() + 4096, 0);
        let s = scan(&b, false);
        assert_eq!((s.records.len(), s.end, s.damage.len()), (3, whole, 0));
    }

    #[test]
    fn a_flipped_bit_in_synced_data_is_damage_never_a_skip() {
        // Two batches: [a#1, b#2, commit] and [a#3, commit].
        let mut b = log_of(&[msg("ns/a", 1, &[1; 64]), msg("ns/b", 2, &[2; 64])]);
        let second_batch = b.len();
        let mut last = Vec::new();
        msg("ns/a", 3, &[3; 64]).encode(&mut last).unwrap();
        Record::commit(1, second_batch as u64, &last)
            .encode(&mut last)
            .unwrap();
        b.extend_from_slice(&last);
        let messages = |s: &Scan| {
            s.records
                .iter()
                .filter(|(_, r)| r.kind == Kind::Message)
                .count()
        };
        let second = msg("ns/a", 1, &[1; 64]).encoded_len();
        // In b#2's payload, a whole batch after it: that message, by name.
        let mut x = b.clone();
        x[second + HEADER_BYTES + 10] ^= 0x10;
        let s = scan(&x, false);
        assert_eq!(messages(&s), 2);
        assert_eq!(
            s.damage,
            vec![Damage::Message {
                topic: b"ns/b".to_vec(),
                epoch: 7,
                seq: 2
            }]
        );
        assert_eq!(s.end, b.len());
        // In b#2's header: unknown messages between two valid records, one by the count of
        // its batch's commit record.
        let mut x = b.clone();
        x[second + 20] ^= 0x01;
        let s = scan(&x, false);
        assert_eq!(messages(&s), 2);
        assert!(matches!(
            s.damage[..],
            [Damage::Unknown { lost: Some(1), .. }]
        ));
        // In the last batch, whose commit record is there: damage to written bytes (no
        // zeros where a torn write would leave them) costs that message alone.
        let mut x = b.clone();
        x[second_batch + HEADER_BYTES + 10] ^= 0x01;
        let s = scan(&x, false);
        assert_eq!((messages(&s), s.end), (2, b.len()));
        assert_eq!(
            s.damage,
            vec![Damage::Message {
                topic: b"ns/a".to_vec(),
                epoch: 7,
                seq: 3
            }]
        );
        // A header there: unknown bytes, and the batch's commit record counts them.
        let mut x = b.clone();
        x[second_batch + 20] ^= 0x01;
        let s = scan(&x, false);
        assert_eq!((messages(&s), s.end), (2, b.len()));
        assert!(
            matches!(s.damage[..], [Damage::Unknown { from, lost: Some(1), .. }] if from == second_batch)
        );
        // Zeros where the last batch's message should be (a torn write: the old tail block,
        // zeros after the first batch, stayed while the block with the commit record landed):
        // cut from there and reported, never skipped.
        let mut x = b.clone();
        x[second_batch..b.len() - COMMIT_BYTES].fill(0);
        let s = scan(&x, false);
        assert_eq!((messages(&s), s.end), (2, second_batch));
        assert!(
            matches!(s.damage[..], [Damage::Unknown { from, lost: None, .. }] if from == second_batch)
        );
        // The first batch's commit record, exactly: no message was in it.
        let first_commit = second_batch - COMMIT_BYTES;
        let mut x = b.clone();
        x[first_commit + 20] ^= 0x01;
        let s = scan(&x, true);
        assert_eq!(messages(&s), 3);
        assert_eq!(
            s.damage,
            vec![Damage::Unknown {
                from: first_commit,
                to: second_batch,
                lost: Some(0)
            }]
        );
        // The commit record itself: the batch's message is whole and kept.
        let mut x = b.clone();
        x[b.len() - 10] ^= 0x01;
        let s = scan(&x, false);
        assert_eq!((messages(&s), s.damage.len(), s.uncommitted), (3, 0, 1));
        // In a closed segment, anything valid after bad bytes is damage, never a tail.
        let mut x = b.clone();
        x[second_batch + HEADER_BYTES + 10] ^= 0x01;
        let s = scan(&x, true);
        assert_eq!((messages(&s), s.end), (2, b.len()));
        assert_eq!(s.damage.len(), 1);
    }

    #[test]
    fn a_record_cut_inside_its_padding_is_not_whole() {
        // A 5-byte payload: 3 bytes of padding after the body.
        let r = msg("ns/a", 1, b"hello");
        let mut b = Vec::new();
        r.encode(&mut b).unwrap();
        let whole = b.len();
        assert_eq!(decode_at(&b, 0), Some(r.clone()));
        b.truncate(whole - 1);
        assert_eq!(decode_at(&b, 0), None);
        let s = scan(&b, false);
        assert_eq!((s.records.len(), s.end, s.damage.len()), (0, 0, 0));
        // After a whole batch: the batch stays, the cut record is a torn tail.
        let mut b = log_of(&[msg("ns/a", 1, &[1; 64])]);
        let batch = b.len();
        r.encode(&mut b).unwrap();
        b.truncate(b.len() - 2);
        let s = scan(&b, false);
        assert_eq!((s.records.len(), s.end, s.uncommitted), (2, batch, 0));
        assert!(s.end <= b.len());
    }

    #[test]
    fn oversized_fields_are_refused() {
        let mut r = msg("ns/a", 1, b"x");
        r.key = vec![0; 70_000];
        assert_eq!(r.encode(&mut Vec::new()), Err(FormatError::TooLarge));
    }
}

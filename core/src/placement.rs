//! Rendezvous (highest random weight) placement.
//!
//! A topic lives on the member with the highest weight `xxh3_64(key || member id)`.
//! xxh3 has a fixed specification, and we call it with its default seed, so every node,
//! build and CPU computes the same placement; ahash is never used here because its
//! output depends on the CPU and the crate version. The same function places topics on
//! shards within a node and (with node ids as members) on storage nodes in a cluster.
//!
//! Adding a member moves only the keys whose top weight the new member takes (about
//! 1/(n+1) of them); removing one moves only the keys it held.

use xxhash_rust::xxh3::xxh3_64;

/// The weight of `member` for `key`.
pub fn weight(key: &[u8], member: u64) -> u64 {
    // key bytes, then the member id little-endian: a fixed, documented layout.
    let mut buf = [0u8; 256];
    let n = key.len();
    if n + 8 <= buf.len() {
        buf[..n].copy_from_slice(key);
        buf[n..n + 8].copy_from_slice(&member.to_le_bytes());
        xxh3_64(&buf[..n + 8])
    } else {
        let mut v = Vec::with_capacity(n + 8);
        v.extend_from_slice(key);
        v.extend_from_slice(&member.to_le_bytes());
        xxh3_64(&v)
    }
}

/// The member of `members` with the highest weight for `key` (ties go to the lower id);
/// `None` when `members` is empty.
pub fn place(key: &[u8], members: impl IntoIterator<Item = u64>) -> Option<u64> {
    members
        .into_iter()
        .map(|m| (weight(key, m), std::cmp::Reverse(m)))
        .max()
        .map(|(_, std::cmp::Reverse(m))| m)
}

/// The shard in `0..shards` that owns `key`.
pub fn shard_for(key: &[u8], shards: u16) -> u16 {
    debug_assert!(shards > 0);
    // `place` is Some for a non-empty range, and the result is < shards.
    place(key, 0..u64::from(shards.max(1))).unwrap_or(0) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;

    #[test]
    fn fixed_output() {
        // Pinned values: these must never change, or topics move on upgrade (and nodes of
        // different builds disagree). xxh3 of the empty input is the published test vector.
        assert_eq!(xxh3_64(b""), 0x2D06_8005_38D3_94C2);
        assert_eq!(weight(b"chat/room-1", 3), 8_475_956_466_945_767_716);
        assert_eq!(weight(b"a/b", 3), 11_020_113_644_553_877_634);
        let owners: Vec<u16> = ["a/b", "chat/room-1", "x/y", "ns/t0"]
            .iter()
            .map(|k| shard_for(k.as_bytes(), 8))
            .collect();
        assert_eq!(owners, vec![4, 2, 6, 2]);
    }

    quickcheck! {
        fn matches_brute_force_argmax(key: Vec<u8>, n: u8) -> bool {
            let n = u64::from(n % 64) + 1;
            let mut best = (0u64, 0u64);
            for m in 0..n {
                let w = weight(&key, m);
                if m == 0 || w > best.0 {
                    best = (w, m);
                }
            }
            place(&key, 0..n) == Some(best.1)
        }

        fn adding_a_member_moves_keys_only_to_it(keys: Vec<u32>, n: u8) -> bool {
            let n = u64::from(n % 32) + 1;
            keys.iter().all(|k| {
                let key = k.to_le_bytes();
                let before = place(&key, 0..n).unwrap();
                let after = place(&key, 0..=n).unwrap();
                after == before || after == n
            })
        }

        fn long_keys_place_like_short_ones(key: Vec<u8>) -> bool {
            let mut long = key.clone();
            long.resize(300, 7);
            let mut v = long.clone();
            v.extend_from_slice(&3u64.to_le_bytes());
            weight(&long, 3) == xxh3_64(&v)
        }
    }

    #[test]
    fn adding_a_shard_moves_about_one_in_n_plus_one() {
        for n in [1u64, 2, 4, 7, 15] {
            let keys = 20_000u32;
            let moved = (0..keys)
                .filter(|k| {
                    let key = format!("ns/topic-{k}");
                    place(key.as_bytes(), 0..n) != place(key.as_bytes(), 0..=n)
                })
                .count() as f64;
            let expected = f64::from(keys) / (n as f64 + 1.0);
            assert!(
                (moved - expected).abs() < expected * 0.1,
                "n={n}: moved {moved}, expected about {expected}"
            );
        }
    }

    #[test]
    fn spread_is_even() {
        let mut counts = [0u32; 8];
        for k in 0..80_000 {
            counts[usize::from(shard_for(format!("ns/t{k}").as_bytes(), 8))] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }
}

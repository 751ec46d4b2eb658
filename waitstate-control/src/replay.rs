//! The replay cache: the MACs of the pulses received within the skew window, so the same
//! signed pulse is taken once. A pulse older than the window is refused as stale before it
//! gets here, so what ages out of the window can be forgotten.
//!
//! The cache holds the decoded MAC bytes, never the signature's text: hex decodes case
//! insensitively, so `ab..` and `AB..` are one signature, and keying on the text would let
//! one captured pulse be replayed by re-casing its letters (issue 15, item 2). The MAC is
//! already a uniformly random 32-byte value, so it is its own digest.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use crate::state::lock;

/// Most pulse MACs remembered to refuse replays within the skew window.
pub(crate) const MAX_REPLAY_ENTRIES: usize = 200_000;

/// The MACs seen, oldest first. Shared by every connection (behind a lock).
#[derive(Debug)]
pub(crate) struct ReplayCache {
    max_entries: usize,
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    digests: HashSet<[u8; 32]>,
    /// Timestamp (epoch ms) and digest, in arrival order.
    order: VecDeque<(u64, [u8; 32])>,
}

impl ReplayCache {
    /// A cache holding at most `max_entries` MACs; past it the oldest are forgotten.
    pub(crate) fn new(max_entries: usize) -> Self {
        Self {
            max_entries,
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Remember the pulse whose MAC (the decoded signature) is `mac`, signed at `ts` (epoch
    /// ms); `false` if it was seen already. Entries older than `oldest` (epoch ms) are
    /// forgotten first.
    pub(crate) fn first_sight(&self, mac: &[u8; 32], ts: u64, oldest: u64) -> bool {
        let digest = *mac;
        let mut seen = lock(&self.seen);
        while let Some((t, d)) = seen.order.front() {
            if *t >= oldest && seen.order.len() < self.max_entries {
                break;
            }
            let d = *d;
            seen.digests.remove(&d);
            seen.order.pop_front();
        }
        if !seen.digests.insert(digest) {
            return false;
        }
        seen.order.push_back((ts, digest));
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.seen).order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A MAC named by a short string (its bytes, zero-padded).
    fn m(name: &str) -> [u8; 32] {
        let mut mac = [0u8; 32];
        mac[..name.len()].copy_from_slice(name.as_bytes());
        mac
    }

    #[test]
    fn a_signature_is_taken_once() {
        let cache = ReplayCache::new(MAX_REPLAY_ENTRIES);
        assert!(cache.first_sight(&m("aa"), 1_000, 0));
        assert!(!cache.first_sight(&m("aa"), 1_000, 0));
        assert!(cache.first_sight(&m("bb"), 1_000, 0));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn entries_older_than_the_window_are_forgotten() {
        let cache = ReplayCache::new(MAX_REPLAY_ENTRIES);
        assert!(cache.first_sight(&m("aa"), 1_000, 0));
        assert!(cache.first_sight(&m("bb"), 2_000, 0));
        // The window now starts at 1 500: `aa` is forgotten, `bb` is kept.
        assert!(cache.first_sight(&m("cc"), 3_000, 1_500));
        assert_eq!(cache.len(), 2);
        assert!(!cache.first_sight(&m("bb"), 2_000, 1_500));
        assert!(cache.first_sight(&m("aa"), 1_000, 1_500));
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = ReplayCache::new(3);
        for sig in ["a", "b", "c", "d", "e"] {
            assert!(cache.first_sight(&m(sig), 1_000, 0));
        }
        assert_eq!(cache.len(), 3);
        // The oldest were forgotten; the newest are still refused.
        assert!(!cache.first_sight(&m("e"), 1_000, 0));
        assert!(cache.first_sight(&m("a"), 1_000, 0));
    }
}

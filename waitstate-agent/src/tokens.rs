//! Admission tokens: an admitted request's [`Permit`], held by the agent until the client
//! finishes it, or until its time to live runs out (the client died: the request ends as
//! cancelled, counted apart, its latency not measured).
//!
//! Bounded: at most `max_tokens` are alive; a reservation is taken before admission, so a
//! full table never admits a request it cannot hold.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;
use waitstate_core::{Ending, Permit};

/// The table of live tokens.
#[derive(Debug)]
pub(crate) struct Tokens {
    map: Mutex<HashMap<u64, Held, foldhash::fast::RandomState>>,
    /// Live tokens plus reservations.
    used: AtomicUsize,
    cap: usize,
    next: AtomicU64,
    /// Mixed into token numbers so that they are not sequential.
    key: u64,
    expired: AtomicU64,
}

#[derive(Debug)]
struct Held {
    permit: Permit,
    expires: Instant,
}

/// A place in the table, taken before admission; given back on drop unless a token
/// took it.
#[derive(Debug)]
pub(crate) struct Reservation<'a> {
    tokens: &'a Tokens,
    live: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.live {
            self.tokens.used.fetch_sub(1, Relaxed);
        }
    }
}

/// How a token ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    Error,
}

impl Tokens {
    pub(crate) fn new(cap: usize, key: u64) -> Self {
        Self {
            map: Mutex::new(HashMap::default()),
            used: AtomicUsize::new(0),
            cap,
            next: AtomicU64::new(1),
            key,
            expired: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Held, foldhash::fast::RandomState>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for one more token, or `None` when `max_tokens` are alive.
    pub(crate) fn reserve(&self) -> Option<Reservation<'_>> {
        let before = self.used.fetch_add(1, Relaxed);
        if before >= self.cap {
            self.used.fetch_sub(1, Relaxed);
            return None;
        }
        Some(Reservation {
            tokens: self,
            live: true,
        })
    }

    /// A fresh token number (unique, not sequential).
    pub(crate) fn fresh_id(&self) -> u64 {
        let n = self.next.fetch_add(1, Relaxed);
        // An odd multiplier is a bijection on u64, and so is the xor: unique numbers.
        n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ self.key
    }

    /// Hold `permit` under `id` until it is finished or `ttl` runs out. An id already
    /// held (a coprocessor id sent twice) ends the older one as cancelled.
    pub(crate) fn hold(
        &self,
        mut reservation: Reservation<'_>,
        id: u64,
        permit: Permit,
        now: Instant,
        ttl: Duration,
    ) {
        reservation.live = false;
        let held = Held {
            permit,
            expires: now + ttl,
        };
        let old = self.lock().insert(id, held);
        if let Some(mut old) = old {
            self.used.fetch_sub(1, Relaxed);
            old.permit.set_ending(Ending::Cancelled);
        }
    }

    /// End the token `id`: `false` when it is unknown (never issued, finished, or expired).
    pub(crate) fn finish(&self, id: u64, outcome: Outcome) -> bool {
        let held = self.lock().remove(&id);
        match held {
            Some(mut held) => {
                self.used.fetch_sub(1, Relaxed);
                held.permit.set_error(outcome == Outcome::Error);
                // Dropped here, outside the lock: the permit records latency and outcome.
                drop(held);
                true
            }
            None => false,
        }
    }

    /// End every token past its time to live as cancelled; how many.
    pub(crate) fn expire(&self, now: Instant) -> usize {
        let mut n = 0;
        {
            let mut map = self.lock();
            if map.is_empty() {
                return 0;
            }
            map.retain(|_, held| {
                if held.expires <= now {
                    // Its client died or forgot it: counted apart, neither a success nor
                    // an error, its latency not measured (a dead client says nothing of
                    // the backend).
                    held.permit.set_ending(Ending::Cancelled);
                    n += 1;
                    false
                } else {
                    true
                }
            });
            // Shrink after a flood so that the memory goes back.
            if map.capacity() > 64 && map.len() < map.capacity() / 4 {
                let keep = map.len() * 2;
                map.shrink_to(keep);
            }
        }
        if n > 0 {
            self.used.fetch_sub(n, Relaxed);
            self.expired.fetch_add(n as u64, Relaxed);
        }
        n
    }

    /// Tokens alive now.
    pub(crate) fn live(&self) -> usize {
        self.lock().len()
    }

    /// Tokens ended by their time to live so far.
    pub(crate) fn expired_total(&self) -> u64 {
        self.expired.load(Relaxed)
    }
}

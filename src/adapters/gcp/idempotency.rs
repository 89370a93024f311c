//! The idempotency keys this instance has seen, in memory, bounded in time and count.
//!
//! On GCP there is no store shared by the instances that ingest (Pub/Sub has no
//! transactions and BigQuery's streaming rows cannot be read back in time). What holds across
//! instances and restarts comes from record ids derived from the key (see
//! [`crate::domain::Idempotency::record_id`]) and the query's deduplication on them; this
//! table adds, within one instance: a replay of a request that succeeded is answered without
//! publishing again, and a key that comes back with another body is refused.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::ports::Idempotency;

/// Most keys kept; each costs its scope and key (at most about 300 bytes) plus a few dozen,
/// so the table stays under about 30 MiB.
pub const MAX_KEYS: usize = 100_000;

/// What the table knows about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not seen within the window (or forgotten): publish.
    New,
    /// Seen with this body, and that request may not have been published (it failed, or is
    /// being retried): publish again, under the same record ids.
    Attempted,
    /// Published with this body: answer with its `count` record ids.
    Published { count: usize },
    /// Seen with another body: refuse.
    OtherBody,
}

#[derive(Debug)]
struct Entry {
    fingerprint: [u8; 32],
    /// Records published under the key, once a publish succeeded.
    published: Option<usize>,
    /// When the key was first seen; the window runs from here.
    since: Instant,
}

type Id = (String, String);

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Id, Entry>,
    /// Keys in the order they were first seen, for expiry and the cap. An id whose entry has
    /// been replaced since (expired, then seen again) appears twice; `since` tells them apart.
    order: VecDeque<(Id, Instant)>,
}

/// Keys seen by this instance within the window.
#[derive(Debug)]
pub struct KeyTable {
    inner: Mutex<Inner>,
    ttl: Duration,
    max_keys: usize,
}

impl KeyTable {
    /// A table that forgets keys after `ttl` and keeps at most `max_keys`.
    pub fn new(ttl: Duration, max_keys: usize) -> Self {
        Self {
            inner: Mutex::default(),
            ttl,
            max_keys,
        }
    }

    /// Looks `idem` up and, when it is new, remembers it with its body as attempted, so that
    /// another body under the same key is refused from now on.
    pub fn begin(&self, idem: &Idempotency) -> Seen {
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("key table poisoned");
        self.expire(&mut inner, now);
        let id = (idem.scope.clone(), idem.key.clone());
        if let Some(e) = inner.entries.get(&id) {
            return match e.published {
                _ if e.fingerprint != idem.fingerprint => Seen::OtherBody,
                Some(count) => Seen::Published { count },
                None => Seen::Attempted,
            };
        }
        inner.entries.insert(
            id.clone(),
            Entry {
                fingerprint: idem.fingerprint,
                published: None,
                since: now,
            },
        );
        inner.order.push_back((id, now));
        while inner.entries.len() > self.max_keys {
            let Some((old, since)) = inner.order.pop_front() else {
                break;
            };
            if inner.entries.get(&old).is_some_and(|e| e.since == since) {
                inner.entries.remove(&old);
            }
        }
        Seen::New
    }

    /// Records that `idem`'s `count` records were published.
    pub fn published(&self, idem: &Idempotency, count: usize) {
        let mut inner = self.inner.lock().expect("key table poisoned");
        let id = (idem.scope.clone(), idem.key.clone());
        if let Some(e) = inner.entries.get_mut(&id) {
            if e.fingerprint == idem.fingerprint {
                e.published = Some(count);
            }
        }
    }

    /// Forgets the keys first seen a window ago or longer.
    fn expire(&self, inner: &mut Inner, now: Instant) {
        while let Some((id, since)) = inner.order.front() {
            if now.duration_since(*since) < self.ttl {
                break;
            }
            if inner.entries.get(id).is_some_and(|e| e.since == *since) {
                inner.entries.remove(id);
            }
            inner.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idem(scope: &str, key: &str, body: &str) -> Idempotency {
        Idempotency::new(scope.into(), key.as_bytes(), body.as_bytes()).unwrap()
    }

    #[test]
    fn a_key_is_new_then_attempted_then_published_and_another_body_is_refused() {
        let t = KeyTable::new(Duration::from_secs(60), 10);
        let a = idem("key/a", "k", "[1]");
        assert_eq!(t.begin(&a), Seen::New);
        assert_eq!(
            t.begin(&a),
            Seen::Attempted,
            "a failed first try is retried"
        );
        assert_eq!(t.begin(&idem("key/a", "k", "[2]")), Seen::OtherBody);
        t.published(&a, 3);
        assert_eq!(t.begin(&a), Seen::Published { count: 3 });
        assert_eq!(t.begin(&idem("key/a", "k", "[2]")), Seen::OtherBody);
        assert_eq!(
            t.begin(&idem("key/b", "k", "[2]")),
            Seen::New,
            "scopes are apart"
        );
    }

    #[test]
    fn keys_are_forgotten_after_the_window() {
        let t = KeyTable::new(Duration::from_millis(30), 10);
        let a = idem("key/a", "k", "[1]");
        assert_eq!(t.begin(&a), Seen::New);
        t.published(&a, 1);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(t.begin(&idem("key/a", "k", "[2]")), Seen::New);
        assert_eq!(t.inner.lock().unwrap().entries.len(), 1);
    }

    #[test]
    fn past_the_cap_the_oldest_keys_are_forgotten_first() {
        let t = KeyTable::new(Duration::from_secs(60), 3);
        for k in ["k1", "k2", "k3", "k4"] {
            assert_eq!(t.begin(&idem("s", k, "{}")), Seen::New);
        }
        let inner = t.inner.lock().unwrap();
        assert_eq!(inner.entries.len(), 3);
        assert!(!inner
            .entries
            .contains_key(&("s".to_owned(), "k1".to_owned())));
        assert!(inner
            .entries
            .contains_key(&("s".to_owned(), "k4".to_owned())));
    }
}

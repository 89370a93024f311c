//! Idempotency keys: a client's `Idempotency-Key`, scoped to the caller that sent it and
//! bound to the body it came with, so that a retry can be told from a new request.
//!
//! Separate from the records because it is about the request, not its content: the same
//! records sent twice under two keys are two requests, and one body sent twice under one key
//! is one.

use sha2::{Digest, Sha256};

use super::FieldError;

/// The header's name, as errors name it.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";
/// Longest key accepted, in bytes (visible ASCII, so also characters).
pub const IDEMPOTENCY_KEY_MAX: usize = 256;

/// A request that says it may be a retry: who asks, under which key, with which body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// Who is asking (`key/<api key id>`, or `addr/<client address>` when authentication is
    /// off): keys of two scopes never meet, so no caller can be answered with another's ids.
    pub scope: String,
    /// The client's `Idempotency-Key`: 1 to 256 visible ASCII characters.
    pub key: String,
    /// SHA-256 of the raw request body: a retry must send the same bytes.
    pub fingerprint: [u8; 32],
}

impl Idempotency {
    /// Checks `key` (the header's raw bytes) and fingerprints `body`; the error names the
    /// header.
    pub fn new(scope: String, key: &[u8], body: &[u8]) -> Result<Self, FieldError> {
        let key = std::str::from_utf8(key).ok().filter(|k| {
            !k.is_empty()
                && k.len() <= IDEMPOTENCY_KEY_MAX
                && k.bytes().all(|b| b.is_ascii_graphic())
        });
        let Some(key) = key else {
            return Err(FieldError {
                field: IDEMPOTENCY_KEY_HEADER.into(),
                message: format!("must be 1 to {IDEMPOTENCY_KEY_MAX} visible ASCII characters"),
            });
        };
        Ok(Self {
            scope,
            key: key.to_owned(),
            fingerprint: Sha256::digest(body).into(),
        })
    }

    /// A stable id for the record at `index` of this request: the same scope, key, body and
    /// index give the same id on every instance and after every restart, and anything else
    /// gives another. 32 hex digits (128 bits of SHA-256), which no Pub/Sub message id looks
    /// like (those are decimal).
    pub fn record_id(&self, index: usize) -> String {
        let mut h = Sha256::new();
        // Length-prefixed parts, so that no two different tuples hash the same bytes.
        for part in [
            b"challenge-latam-api record id v1".as_slice(),
            self.scope.as_bytes(),
            self.key.as_bytes(),
            &self.fingerprint,
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.update((index as u64).to_be_bytes());
        hex::encode(&h.finalize()[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idem(scope: &str, key: &str, body: &str) -> Idempotency {
        Idempotency::new(scope.into(), key.as_bytes(), body.as_bytes()).unwrap()
    }

    #[test]
    fn keys_must_be_1_to_256_visible_ascii_characters_and_the_error_names_the_header() {
        for bad in ["", "has space", "tab\t", "é", &"x".repeat(257)] {
            let e = Idempotency::new("s".into(), bad.as_bytes(), b"{}").unwrap_err();
            assert_eq!(e.field, "Idempotency-Key", "{bad:?}");
        }
        assert!(Idempotency::new("s".into(), &[0xff, b'a'], b"{}").is_err());
        assert!(Idempotency::new("s".into(), "x".repeat(256).as_bytes(), b"{}").is_ok());
        assert!(Idempotency::new("s".into(), b"!~", b"{}").is_ok());
    }

    #[test]
    fn the_fingerprint_is_the_sha256_of_the_raw_body() {
        let a = idem("s", "k", "[1]");
        assert_eq!(
            hex::encode(a.fingerprint),
            // printf '[1]' | sha256sum
            "080a9ed428559ef602668b4c00f114f1a11c3f6b02a435f0bdc154578e4d7f22"
        );
        // Whitespace is part of the body: a retry sends the same bytes.
        assert_ne!(a.fingerprint, idem("s", "k", "[ 1]").fingerprint);
    }

    #[test]
    fn record_ids_are_stable_and_differ_by_scope_key_body_and_index() {
        let a = idem("key/a", "k1", "{}");
        assert_eq!(a.record_id(0), idem("key/a", "k1", "{}").record_id(0));
        assert_eq!(a.record_id(0).len(), 32);
        assert!(a.record_id(0).bytes().all(|b| b.is_ascii_hexdigit()));
        let others = [
            idem("key/b", "k1", "{}").record_id(0),
            idem("key/a", "k2", "{}").record_id(0),
            idem("key/a", "k1", "[]").record_id(0),
            a.record_id(1),
        ];
        for other in others {
            assert_ne!(a.record_id(0), other);
        }
        // Parts are length-prefixed: moving bytes between scope and key changes the id.
        assert_ne!(
            idem("key/ab", "c", "{}").record_id(0),
            idem("key/a", "bc", "{}").record_id(0)
        );
    }
}

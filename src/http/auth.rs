//! API-key authentication and scopes (CONTRACT.md, "Credentials").
//!
//! `API_KEYS_FILE` holds only SHA-256 hashes of the keys, each with an id and its scopes. A
//! presented key is hashed and compared with every configured hash in constant time, so
//! neither timing nor logs reveal a key. Keys are never logged; the key id is.
//!
//! A key that has matched its hash once is kept (in memory only, zeroed when dropped) beside
//! it, and later requests compare the presented bytes with the kept keys in constant time
//! before hashing: SHA-256 was the largest single cost of the middleware (about 3,500 of the
//! 16,000 instructions it adds per request; docs/benchmarks.md). Only keys that are valid get
//! kept, one per configured key, so the memory is bounded by the keys file. What timing can
//! tell a caller is whether its own key is valid, which the status code says anyway.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use axum::extract::{ConnectInfo, Request};
use axum::http::header::AUTHORIZATION;
use secrecy::{ExposeSecret, SecretSlice};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::oidc::{self, Failure, Issuer, Oidc};
use crate::telemetry::logging;
use crate::telemetry::metrics::{AuthAttempt, AuthMetrics};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// POST ingestData.
    Ingest,
    /// GET getData.
    Read,
}

impl Scope {
    /// The scope's name in the contract.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: String,
    sha256: String,
    scopes: Vec<Scope>,
}

struct ApiKey {
    id: Arc<str>,
    hash: [u8; 32],
    scopes: Scopes,
    /// The key itself, once a request has presented it (see the module docs).
    seen: OnceLock<SecretSlice<u8>>,
}

/// A set of [`Scope`]s; `Copy`, so handing a request its scopes allocates nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    fn bit(scope: Scope) -> u8 {
        match scope {
            Scope::Ingest => 1,
            Scope::Read => 2,
        }
    }

    /// Whether `scope` is in the set.
    pub fn contains(&self, scope: &Scope) -> bool {
        self.0 & Self::bit(*scope) != 0
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Scopes(iter.into_iter().fold(0, |acc, s| acc | Self::bit(s)))
    }
}

/// How requests are authenticated; chosen once at start.
pub enum Auth {
    /// No keys file on the local backend: every request is allowed (warned at start).
    Disabled,
    /// Keys from `API_KEYS_FILE`.
    Keys(Vec<ApiKeyRef>),
}

/// One configured key (hash, id, scopes). Opaque outside this module.
pub struct ApiKeyRef(ApiKey);

impl Auth {
    /// Loads and checks the keys file.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("API_KEYS_FILE {}: {e}", path.display()))?;
        let entries: Vec<KeyEntry> = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("API_KEYS_FILE {}: {e}", path.display()))?;
        if entries.is_empty() {
            anyhow::bail!("API_KEYS_FILE {} lists no keys", path.display());
        }
        let mut keys = Vec::new();
        let mut ids = HashSet::new();
        for e in entries {
            let bytes = hex::decode(e.sha256.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "API_KEYS_FILE: key {:?}: sha256 must be 64 hex digits",
                        e.id
                    )
                })?;
            if e.id.is_empty() || !ids.insert(e.id.clone()) {
                anyhow::bail!(
                    "API_KEYS_FILE: key ids must be unique and non-empty ({:?})",
                    e.id
                );
            }
            keys.push(ApiKeyRef(ApiKey {
                id: e.id.into(),
                hash: bytes,
                scopes: e.scopes.into_iter().collect(),
                seen: OnceLock::new(),
            }));
        }
        Ok(Auth::Keys(keys))
    }

    /// `enabled` or `disabled`, as `/readyz` reports it.
    pub fn mode(&self) -> &'static str {
        match self {
            Auth::Disabled => "disabled",
            Auth::Keys(_) => "enabled",
        }
    }

    fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, ApiError> {
        let keys = match self {
            Auth::Disabled => {
                return Ok(Principal {
                    key_id: None,
                    scopes: None,
                })
            }
            Auth::Keys(keys) => keys,
        };
        let token = bearer(authorization).ok_or(ApiError::Unauthorized)?;
        let token = token.as_bytes();
        // Each loop looks at every key, whatever matches, so the time taken does not depend
        // on which key it is.
        let mut found: Option<&ApiKey> = None;
        for ApiKeyRef(key) in keys {
            if let Some(seen) = key.seen.get() {
                if bool::from(seen.expose_secret().ct_eq(token)) {
                    found = Some(key);
                }
            }
        }
        if found.is_none() {
            let presented: [u8; 32] = Sha256::digest(token).into();
            for ApiKeyRef(key) in keys {
                if bool::from(key.hash.ct_eq(&presented)) {
                    found = Some(key);
                }
            }
            if let Some(key) = found {
                key.seen.get_or_init(|| token.to_vec().into());
            }
        }
        let key = found.ok_or(ApiError::Unauthorized)?;
        Ok(Principal {
            key_id: Some(key.id.clone()),
            scopes: Some(key.scopes),
        })
    }
}

/// Who is calling: the key's id and scopes, or nobody in particular when auth is off.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The key id (never the key).
    pub key_id: Option<Arc<str>>,
    /// `None` when auth is disabled: everything is allowed.
    pub scopes: Option<Scopes>,
}

/// The rate-limit key of a request: the key id, or the client address when auth is off.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey(pub Arc<str>);

/// What authentication needs besides the keys.
#[derive(Clone)]
pub struct AuthState {
    auth: Arc<Auth>,
    oidc: Option<Arc<Oidc>>,
    trust_forwarded_for: bool,
    metrics: Arc<AuthMetrics>,
}

/// Why [`AuthState::authenticate`] did not admit a request.
pub enum Rejection {
    /// Answer with this error.
    Error(ApiError),
    /// A bearer JWT names a key the issuer's cached set lacks: refresh that issuer's keys,
    /// then try once more ([`AuthState::authenticate_after_refresh`]).
    Refresh(Arc<Issuer>),
}

impl AuthState {
    /// Authentication by `auth` (and bearer JWTs from `oidc`); anonymous clients (auth off)
    /// are keyed by the first `X-Forwarded-For` address when `trust_forwarded_for`. Its counter
    /// handles are made as each outcome is first counted ([`AuthMetrics`]).
    pub fn new(auth: Arc<Auth>, oidc: Option<Arc<Oidc>>, trust_forwarded_for: bool) -> Self {
        Self {
            auth,
            oidc,
            trust_forwarded_for,
            metrics: Arc::new(AuthMetrics::register()),
        }
    }

    /// Authenticates an API request (401 without a known key or a valid token) and records
    /// in its extensions who is calling, for the rate limiter ([`ClientKey`]) and the scope
    /// check ([`Principal`]). The key id (or the token's subject) goes into the request's log
    /// fields (and, with OTLP on, onto its span when the request ends); the key or token
    /// itself goes nowhere.
    pub fn authenticate(&self, req: &mut Request) -> Result<(), Rejection> {
        self.authenticate_once(req, true)
    }

    /// After [`Rejection::Refresh`]: refreshes (at most once per interval, however many
    /// requests ask) and authenticates again, without asking for another refresh.
    pub async fn authenticate_after_refresh(
        &self,
        req: &mut Request,
        issuer: Arc<Issuer>,
    ) -> Result<(), ApiError> {
        issuer.refresh_unknown_kid().await;
        match self.authenticate_once(req, false) {
            Ok(()) => Ok(()),
            Err(Rejection::Error(e)) => Err(e),
            Err(Rejection::Refresh(_)) => Err(ApiError::InvalidToken),
        }
    }

    /// [`AuthState::authenticate`], refreshing keys when it asks to.
    pub async fn authenticate_async(&self, req: &mut Request) -> Result<(), ApiError> {
        match self.authenticate(req) {
            Ok(()) => Ok(()),
            Err(Rejection::Error(e)) => Err(e),
            Err(Rejection::Refresh(issuer)) => self.authenticate_after_refresh(req, issuer).await,
        }
    }

    fn authenticate_once(&self, req: &mut Request, may_refresh: bool) -> Result<(), Rejection> {
        let header = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let jwt = match (&self.oidc, bearer(header)) {
            (Some(oidc), Some(token)) if oidc::looks_like_jwt(token) => Some((oidc, token)),
            _ => None,
        };
        let principal = if let Some((oidc, token)) = jwt {
            match oidc.verify(token, may_refresh) {
                Ok(v) => {
                    self.metrics.count(AuthAttempt::OidcSuccess);
                    Principal {
                        key_id: Some(v.key_id),
                        scopes: Some(v.scopes),
                    }
                }
                Err(Failure::Refresh(issuer)) => return Err(Rejection::Refresh(issuer)),
                Err(Failure::Unavailable) => {
                    self.metrics.count(AuthAttempt::OidcUnavailable);
                    return Err(Rejection::Error(ApiError::IssuerUnavailable));
                }
                Err(Failure::Invalid(reason)) => {
                    self.metrics.count(AuthAttempt::OidcInvalid);
                    tracing::debug!(reason, "bearer token refused");
                    return Err(Rejection::Error(ApiError::InvalidToken));
                }
            }
        } else {
            let result = self.auth.authenticate(header);
            if let Auth::Keys(_) = *self.auth {
                match (&result, header) {
                    (Ok(_), _) => self.metrics.count(AuthAttempt::KeySuccess),
                    (Err(_), None) => self.metrics.count(AuthAttempt::Missing),
                    (Err(_), Some(_)) => self.metrics.count(AuthAttempt::KeyInvalid),
                }
            }
            result.map_err(Rejection::Error)?
        };
        let client = match &principal.key_id {
            Some(id) => {
                logging::record_key_id(id);
                ClientKey(id.clone())
            }
            None => ClientKey(client_ip(req, self.trust_forwarded_for).to_string().into()),
        };
        req.extensions_mut().insert(client);
        req.extensions_mut().insert(principal);
        Ok(())
    }
}

/// The credential of an `Authorization: Bearer <credential>` header.
fn bearer(authorization: Option<&str>) -> Option<&str> {
    authorization
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn client_ip(req: &Request, trust_forwarded_for: bool) -> IpAddr {
    if trust_forwarded_for {
        let forwarded = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok());
        if let Some(ip) = forwarded {
            return ip;
        }
    }
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// 403 unless the authenticated caller has `scope` (everything is allowed with auth off; a
/// request that was never authenticated has no scope at all).
pub fn require(req: &Request, scope: Scope) -> Result<(), ApiError> {
    let allowed = match req.extensions().get::<Principal>() {
        Some(p) => p.scopes.as_ref().is_none_or(|s| s.contains(&scope)),
        None => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(ApiError::Forbidden(scope.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Auth {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let hash = hex::encode(Sha256::digest(b"secret-ingest"));
        std::fs::write(
            &path,
            format!(r#"[{{"id":"a","sha256":"{hash}","scopes":["ingest"]}}]"#),
        )
        .unwrap();
        Auth::from_file(&path).unwrap()
    }

    #[test]
    fn a_known_key_authenticates_with_its_scopes_only() {
        let p = keys().authenticate(Some("Bearer secret-ingest")).unwrap();
        assert_eq!(p.key_id.as_deref(), Some("a"));
        let scopes = p.scopes.unwrap();
        assert!(scopes.contains(&Scope::Ingest) && !scopes.contains(&Scope::Read));
    }

    #[test]
    fn missing_malformed_or_unknown_keys_are_401() {
        let auth = keys();
        for h in [
            None,
            Some("secret-ingest"),
            Some("Bearer "),
            Some("Bearer nope"),
            Some("Basic x"),
        ] {
            assert!(
                matches!(auth.authenticate(h), Err(ApiError::Unauthorized)),
                "{h:?}"
            );
        }
    }

    fn two_keys() -> Auth {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let (a, b) = (
            hex::encode(Sha256::digest(b"key-of-a")),
            hex::encode(Sha256::digest(b"key-of-b")),
        );
        std::fs::write(
            &path,
            format!(
                r#"[{{"id":"a","sha256":"{a}","scopes":["ingest"]}},
                    {{"id":"b","sha256":"{b}","scopes":["read"]}}]"#
            ),
        )
        .unwrap();
        Auth::from_file(&path).unwrap()
    }

    fn kept(auth: &Auth) -> Vec<Option<Vec<u8>>> {
        let Auth::Keys(keys) = auth else {
            panic!("auth is on")
        };
        keys.iter()
            .map(|ApiKeyRef(k)| k.seen.get().map(|s| s.expose_secret().to_vec()))
            .collect()
    }

    #[test]
    fn a_kept_key_still_maps_to_its_own_id_and_near_misses_stay_401() {
        let auth = two_keys();
        // Wrong keys are never kept.
        for bad in ["Bearer key-of-", "Bearer key-of-c", "Bearer key-of-aa"] {
            assert!(matches!(
                auth.authenticate(Some(bad)),
                Err(ApiError::Unauthorized)
            ));
        }
        assert_eq!(kept(&auth), vec![None, None]);
        // First use hashes and keeps the key beside its own entry only.
        let first = auth.authenticate(Some("Bearer key-of-b")).unwrap();
        assert_eq!(first.key_id.as_deref(), Some("b"));
        assert_eq!(kept(&auth), vec![None, Some(b"key-of-b".to_vec())]);
        // Kept or not, each key is its own caller, with its own scopes.
        for _ in 0..2 {
            let a = auth.authenticate(Some("Bearer key-of-a")).unwrap();
            assert_eq!(a.key_id.as_deref(), Some("a"));
            assert!(a.scopes.unwrap().contains(&Scope::Ingest));
            let b = auth.authenticate(Some("Bearer key-of-b")).unwrap();
            assert_eq!(b.key_id.as_deref(), Some("b"));
            assert!(!b.scopes.unwrap().contains(&Scope::Ingest));
        }
        // A prefix, an extension or one changed byte of a kept key is not that key.
        for bad in [
            "Bearer key-of-",
            "Bearer key-of-bb",
            "Bearer key-of-c",
            "Bearer Key-of-b",
        ] {
            assert!(
                matches!(auth.authenticate(Some(bad)), Err(ApiError::Unauthorized)),
                "{bad}"
            );
        }
        assert_eq!(
            kept(&auth),
            vec![Some(b"key-of-a".to_vec()), Some(b"key-of-b".to_vec())]
        );
    }

    #[test]
    fn a_keys_file_with_a_bad_hash_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        std::fs::write(&path, r#"[{"id":"a","sha256":"abc","scopes":["read"]}]"#).unwrap();
        assert!(Auth::from_file(&path).is_err());
    }
}

//! OIDC bearer tokens (JWTs) beside API keys: issuer discovery, a cached JWKS per issuer,
//! verification with `jsonwebtoken`, and claim values mapped to the contract's scopes.
//!
//! Separate from `auth` because it owns network state (each issuer's keys, fetched at start,
//! refreshed in the background and, at most once per [`UNKNOWN_KID_INTERVAL`], when a token
//! names a key id the cache does not hold) while API keys are a fixed table.
//!
//! What each check stops is in docs/oidc.md ("Threat model"). In short: a fixed algorithm
//! allow-list (no `none`, no HMAC, so a public key can never be used as an HMAC secret),
//! the key's own algorithm must match the header's, `iss` and `aud` matched exactly,
//! `exp`/`nbf`/`iat` with [`LEEWAY_SECONDS`], tokens over [`MAX_TOKEN_BYTES`] refused before
//! any parsing. A token is never logged; the caller is known by its subject.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::auth::{Scope, Scopes};
use crate::telemetry::metrics::OIDC_JWKS_FETCHES;

/// Longest token accepted; larger ones are refused before they are decoded (real ID and
/// access tokens are 1-2 KiB).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECONDS: u64 = 60;
/// The only algorithms verified: asymmetric, and what Okta and Google sign with.
const ALLOWED: [Algorithm; 2] = [Algorithm::RS256, Algorithm::ES256];
/// A token with a key id the cache does not hold fetches the JWKS again at most this often,
/// so a flood of made-up key ids costs the issuer one request per interval.
pub const UNKNOWN_KID_INTERVAL: Duration = Duration::from_secs(30);
/// Background refresh while the last fetch worked: keys rotate in ahead of use.
const REFRESH_EVERY: Duration = Duration::from_secs(15 * 60);
/// Background retry after a failed fetch, when some keys are cached.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);
/// Background retry while no key has ever been fetched (requests are answered 503 then).
const RETRY_WITHOUT_KEYS: Duration = Duration::from_secs(2);
/// Deadline of one discovery or JWKS request.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a token was not accepted.
pub enum Failure {
    /// The token is bad (401 `invalid_token`); the reason is for debug logs only.
    Invalid(&'static str),
    /// The token's issuer has no keys yet (503 with `Retry-After`).
    Unavailable,
    /// The key id is unknown (or no keys yet) and a refresh is allowed now: refresh, then
    /// verify again without refreshing.
    Refresh(Arc<Issuer>),
}

/// A verified token: who it is and what it may do.
pub struct Verified {
    /// `oidc:<sub>`, or `oidc:sha256:<hex>` when the subject looks like an email.
    pub key_id: Arc<str>,
    /// The scopes its mapped claim values grant (maybe none).
    pub scopes: Scopes,
}

struct Key {
    key: DecodingKey,
    alg: Algorithm,
}

/// One trusted issuer and its cached keys.
pub struct Issuer {
    /// The issuer URL, exactly as tokens carry it in `iss`.
    url: String,
    client: reqwest::Client,
    /// Key id to key; replaced whole by each successful fetch, kept when a fetch fails.
    keys: RwLock<Arc<HashMap<String, Key>>>,
    /// From discovery; forgotten when a JWKS fetch fails, so the next one rediscovers.
    jwks_uri: Mutex<Option<String>>,
    /// Whether the last fetch worked (`/readyz`).
    reachable: Mutex<Option<bool>>,
    /// When the last unknown-kid refresh started.
    last_on_demand: Mutex<Option<Instant>>,
    /// One fetch at a time per issuer: a burst of unknown key ids waits for the same fetch.
    fetching: tokio::sync::Mutex<()>,
}

/// The trusted issuers and how their claims map to scopes.
pub struct Oidc {
    issuers: Vec<Arc<Issuer>>,
    audience: String,
    claims: Vec<String>,
    map: HashMap<String, Vec<Scope>>,
}

/// True when `token` is shaped like a JWT: three dot-separated base64url segments (the
/// third may be empty, as in an unsigned `alg: none` token, which is then refused).
pub fn looks_like_jwt(token: &str) -> bool {
    let b64url = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let parts: Vec<&str> = token.splitn(4, '.').collect();
    parts.len() == 3
        && !parts[0].is_empty()
        && !parts[1].is_empty()
        && parts.iter().all(|p| b64url(p))
}

impl Oidc {
    /// Builds the verifier (no network yet; see [`Oidc::start`]).
    pub fn new(
        issuers: &[String],
        audience: &str,
        claims: &[String],
        map: &[(String, Vec<String>)],
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| anyhow::anyhow!("OIDC_ISSUERS: building the HTTP client: {e}"))?;
        let map = map
            .iter()
            .map(|(value, scopes)| {
                let scopes = scopes
                    .iter()
                    .filter_map(|s| match s.as_str() {
                        "ingest" => Some(Scope::Ingest),
                        "read" => Some(Scope::Read),
                        _ => None,
                    })
                    .collect();
                (value.clone(), scopes)
            })
            .collect();
        Ok(Oidc {
            issuers: issuers
                .iter()
                .map(|url| {
                    Arc::new(Issuer {
                        url: url.clone(),
                        client: client.clone(),
                        keys: RwLock::new(Arc::new(HashMap::new())),
                        jwks_uri: Mutex::new(None),
                        reachable: Mutex::new(None),
                        last_on_demand: Mutex::new(None),
                        fetching: tokio::sync::Mutex::new(()),
                    })
                })
                .collect(),
            audience: audience.to_owned(),
            claims: claims.to_vec(),
            map,
        })
    }

    /// Fetches every issuer's keys once, concurrently. An issuer that cannot be reached does
    /// not stop the start: its tokens are answered 503 until the background retry succeeds.
    pub async fn start(&self) {
        futures::future::join_all(self.issuers.iter().map(|i| i.fetch("start"))).await;
    }

    /// Keeps every issuer's keys fresh in the background, for the life of the process.
    pub fn spawn_refresh(&self) {
        for issuer in &self.issuers {
            let issuer = issuer.clone();
            tokio::spawn(async move {
                loop {
                    let wait = if issuer.keys().is_empty() {
                        RETRY_WITHOUT_KEYS
                    } else if *lock(&issuer.reachable) == Some(false) {
                        RETRY_AFTER_FAILURE
                    } else {
                        REFRESH_EVERY
                    };
                    tokio::time::sleep(wait).await;
                    issuer.fetch("periodic").await;
                }
            });
        }
    }

    /// Each issuer and `ok`, `unreachable` (keys cached from an earlier fetch still verify)
    /// or `unreachable_no_keys` (its tokens are answered 503), for `/readyz`.
    pub fn status(&self) -> BTreeMap<String, &'static str> {
        self.issuers
            .iter()
            .map(|i| {
                let state = match (*lock(&i.reachable), i.keys().is_empty()) {
                    (Some(true), _) => "ok",
                    (_, false) => "unreachable",
                    (_, true) => "unreachable_no_keys",
                };
                (i.url.clone(), state)
            })
            .collect()
    }

    /// Verifies a JWT-shaped token. With `may_refresh`, an unknown key id (or an issuer
    /// without keys) asks for a refresh instead of failing, when one is allowed now.
    pub fn verify(&self, token: &str, may_refresh: bool) -> Result<Verified, Failure> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Failure::Invalid("too_large"));
        }
        // Only the header's `alg` and `kid` and the payload's `iss` are read before the
        // signature is checked, and only to pick the key; all three are checked again.
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| Failure::Invalid("bad_header"))?;
        if !ALLOWED.contains(&header.alg) {
            return Err(Failure::Invalid("algorithm"));
        }
        let iss = unverified_issuer(token).ok_or(Failure::Invalid("bad_payload"))?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.url == iss)
            .ok_or(Failure::Invalid("issuer"))?;
        let keys = issuer.keys();
        let refresh = || {
            if may_refresh && issuer.may_refresh_now() {
                Failure::Refresh(issuer.clone())
            } else if keys.is_empty() {
                Failure::Unavailable
            } else {
                Failure::Invalid("unknown_kid")
            }
        };
        if keys.is_empty() {
            return Err(refresh());
        }
        let kid = header.kid.as_deref().ok_or(Failure::Invalid("no_kid"))?;
        let key = keys.get(kid).ok_or_else(refresh)?;
        if key.alg != header.alg {
            return Err(Failure::Invalid("algorithm"));
        }
        let mut validation = Validation::new(key.alg);
        validation.set_issuer(&[&issuer.url]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let data =
            jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key.key, &validation)
                .map_err(|_| Failure::Invalid("verification"))?;
        let claims = data.claims;
        if let Some(iat) = claims.get("iat") {
            let now = jsonwebtoken::get_current_timestamp();
            match iat.as_f64() {
                Some(iat) if iat <= (now + LEEWAY_SECONDS) as f64 => {}
                _ => return Err(Failure::Invalid("iat")),
            }
        }
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(Failure::Invalid("sub"))?;
        Ok(Verified {
            key_id: subject_id(sub).into(),
            scopes: self.scopes(&issuer.url, &claims),
        })
    }

    /// The union of the scopes that the configured claims' values map to: entries written
    /// `value` match a value from any issuer, entries written `<issuer>#value` only from that
    /// issuer (so an Okta user's `email` can never match a Google service account's entry).
    fn scopes(&self, issuer: &str, claims: &serde_json::Map<String, Value>) -> Scopes {
        let mut granted = Vec::new();
        for name in &self.claims {
            let values: Vec<&str> = match claims.get(name) {
                Some(Value::String(s)) if name == "scope" => s.split_whitespace().collect(),
                Some(Value::String(s)) => vec![s.as_str()],
                Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            for v in values {
                let qualified = format!("{issuer}#{v}");
                for key in [v, qualified.as_str()] {
                    if let Some(scopes) = self.map.get(key) {
                        granted.extend(scopes.iter().copied());
                    }
                }
            }
        }
        granted.into_iter().collect()
    }
}

/// The rate-limit and log id of a subject: the subject itself, or a hash of it when it looks
/// like an email (personal data stays out of logs).
fn subject_id(sub: &str) -> String {
    if sub.contains('@') {
        let digest = Sha256::digest(sub.as_bytes());
        format!("oidc:sha256:{}", hex::encode(&digest[..8]))
    } else {
        format!("oidc:{sub}")
    }
}

/// The payload's `iss`, read without verification (only to pick the issuer's keys).
fn unverified_issuer(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Iss {
        iss: String,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice::<Iss>(&bytes).ok().map(|i| i.iss)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Issuer {
    fn keys(&self) -> Arc<HashMap<String, Key>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn may_refresh_now(&self) -> bool {
        lock(&self.last_on_demand).is_none_or(|t| t.elapsed() >= UNKNOWN_KID_INTERVAL)
    }

    /// Refreshes for an unknown key id, unless another refresh for one started less than
    /// [`UNKNOWN_KID_INTERVAL`] ago (requests that arrive during a refresh wait for it).
    pub async fn refresh_unknown_kid(&self) {
        let _one = self.fetching.lock().await;
        {
            let mut last = lock(&self.last_on_demand);
            if last.is_some_and(|t| t.elapsed() < UNKNOWN_KID_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        self.fetch_locked("unknown_kid").await;
    }

    async fn fetch(&self, reason: &'static str) {
        let _one = self.fetching.lock().await;
        self.fetch_locked(reason).await;
    }

    async fn fetch_locked(&self, reason: &'static str) {
        let result = self.try_fetch().await;
        let outcome = if result.is_ok() { "success" } else { "failure" };
        metrics::counter!(OIDC_JWKS_FETCHES, "reason" => reason, "outcome" => outcome).increment(1);
        match result {
            Ok(keys) => {
                tracing::info!(issuer = %self.url, keys = keys.len(), reason, "OIDC keys fetched");
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
                *lock(&self.reachable) = Some(true);
            }
            Err(error) => {
                tracing::warn!(issuer = %self.url, %error, reason, cached_keys = self.keys().len(), "OIDC keys could not be fetched");
                *lock(&self.jwks_uri) = None;
                *lock(&self.reachable) = Some(false);
            }
        }
    }

    async fn try_fetch(&self) -> Result<HashMap<String, Key>, String> {
        let cached = lock(&self.jwks_uri).clone();
        let jwks_uri = match cached {
            Some(uri) => uri,
            None => {
                #[derive(Deserialize)]
                struct Discovery {
                    issuer: String,
                    jwks_uri: String,
                }
                let url = format!("{}/.well-known/openid-configuration", self.url);
                let doc: Discovery = self.get_json(&url).await?;
                if doc.issuer != self.url {
                    return Err(format!(
                        "discovery names issuer {:?}, not the configured one",
                        doc.issuer
                    ));
                }
                *lock(&self.jwks_uri) = Some(doc.jwks_uri.clone());
                doc.jwks_uri
            }
        };
        #[derive(Deserialize)]
        struct RawSet {
            keys: Vec<Value>,
        }
        let set: RawSet = self.get_json(&jwks_uri).await?;
        let keys: HashMap<String, Key> = set
            .keys
            .into_iter()
            // A key this service cannot use (another type, curve or use) is skipped, not an
            // error: issuers publish keys for other clients too.
            .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
            .filter_map(usable_key)
            .collect();
        if keys.is_empty() {
            return Err("the JWKS holds no RS256 or ES256 signing key with a kid".into());
        }
        Ok(keys)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let response = self
            .client
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("GET {url}: {e}"))?;
        response
            .json()
            .await
            .map_err(|e| format!("GET {url}: not the expected JSON: {e}"))
    }
}

/// A JWK this service verifies with: a signing key with a key id, RSA (RS256) or EC P-256
/// (ES256), whose declared `alg`, if any, agrees.
fn usable_key(jwk: Jwk) -> Option<(String, Key)> {
    let kid = jwk.common.key_id.clone()?;
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let (alg, declared) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (Algorithm::RS256, KeyAlgorithm::RS256),
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            (Algorithm::ES256, KeyAlgorithm::ES256)
        }
        _ => return None,
    };
    if matches!(jwk.common.key_algorithm, Some(a) if a != declared) {
        return None;
    }
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some((kid, Key { key, alg }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_three_base64url_segments_look_like_a_jwt() {
        assert!(looks_like_jwt("eyJh.eyJz.c2ln"));
        assert!(looks_like_jwt("eyJh.eyJz."));
        for not in [
            "key", "a.b", "a.b.c.d", ".b.c", "a..c", "a.b+/.c", "a b.c.d",
        ] {
            assert!(!looks_like_jwt(not), "{not}");
        }
    }

    #[test]
    fn an_email_subject_is_hashed_and_others_are_kept() {
        assert_eq!(subject_id("1234"), "oidc:1234");
        let hashed = subject_id("someone@example.com");
        assert!(hashed.starts_with("oidc:sha256:") && !hashed.contains("example"));
    }
}

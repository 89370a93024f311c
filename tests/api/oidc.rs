//! Bearer JWTs from OIDC issuers, beside API keys. Each test serves its own issuer on
//! 127.0.0.1 (discovery and JWKS, with a switch to take it down and a count of the JWKS
//! requests), with RSA and EC keys generated at run time, and signs tokens with
//! `jsonwebtoken`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::encoding::AsDer;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::helpers::*;

const AUDIENCE: &str = "challenge-latam-api-test";

/// A signing key and its public JWK.
struct SigningKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl SigningKey {
    fn rsa(kid: &str) -> Self {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 = pair.as_der().unwrap();
        let encoding = EncodingKey::from_rsa_der(pkcs1_of(pkcs8.as_ref()));
        Self::new(kid, Algorithm::RS256, encoding)
    }

    fn ec(kid: &str) -> Self {
        let pair = aws_lc_rs::signature::EcdsaKeyPair::generate(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        )
        .unwrap();
        let pkcs8 = pair.to_pkcs8v1().unwrap();
        let encoding = EncodingKey::from_ec_der(pkcs8.as_ref());
        Self::new(kid, Algorithm::ES256, encoding)
    }

    fn new(kid: &str, alg: Algorithm, encoding: EncodingKey) -> Self {
        let mut jwk =
            serde_json::to_value(Jwk::from_encoding_key(&encoding, alg).unwrap()).unwrap();
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        SigningKey {
            kid: kid.to_owned(),
            alg,
            encoding,
            jwk,
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 document (what `EncodingKey::from_rsa_der`
/// takes): SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING key }.
fn pkcs1_of(pkcs8: &[u8]) -> &[u8] {
    // Returns (tag, content, rest) of the DER element at the start of `der`.
    fn element(der: &[u8]) -> (u8, &[u8], &[u8]) {
        let tag = der[0];
        let (len, header) = match der[1] {
            n if n < 0x80 => (n as usize, 2),
            n => {
                let count = (n & 0x7f) as usize;
                let len = der[2..2 + count]
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | *b as usize);
                (len, 2 + count)
            }
        };
        (tag, &der[header..header + len], &der[header + len..])
    }
    let (tag, outer, _) = element(pkcs8);
    assert_eq!(tag, 0x30);
    let (_, _, rest) = element(outer); // version
    let (_, _, rest) = element(rest); // algorithm
    let (tag, key, _) = element(rest);
    assert_eq!(tag, 0x04);
    key
}

/// What the test issuer serves, and what it saw.
struct IssuerState {
    url: String,
    jwks: Mutex<Value>,
    down: AtomicBool,
    jwks_requests: AtomicUsize,
}

struct TestIssuer {
    state: Arc<IssuerState>,
}

impl TestIssuer {
    async fn start(keys: &[&SigningKey]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(IssuerState {
            url,
            jwks: Mutex::new(Value::Null),
            down: AtomicBool::new(false),
            jwks_requests: AtomicUsize::new(0),
        });
        let issuer = TestIssuer { state };
        issuer.publish(keys);
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .with_state(issuer.state.clone());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        issuer
    }

    fn url(&self) -> &str {
        &self.state.url
    }

    /// Serves these keys from now on (a rotation drops the ones not listed).
    fn publish(&self, keys: &[&SigningKey]) {
        let keys: Vec<Value> = keys.iter().map(|k| k.jwk.clone()).collect();
        *self.state.jwks.lock().unwrap() = json!({ "keys": keys });
    }

    fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    fn jwks_requests(&self) -> usize {
        self.state.jwks_requests.load(Ordering::SeqCst)
    }

    /// Claims of a valid token from this issuer, for `sub`, in `groups`.
    fn claims(&self, sub: &str, groups: &[&str]) -> Value {
        let now = now();
        json!({
            "iss": self.url(), "aud": AUDIENCE, "sub": sub,
            "iat": now, "nbf": now, "exp": now + 300, "groups": groups,
        })
    }
}

async fn discovery(State(s): State<Arc<IssuerState>>) -> Response {
    if s.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    Json(json!({ "issuer": s.url, "jwks_uri": format!("{}/jwks", s.url) })).into_response()
}

async fn jwks(State(s): State<Arc<IssuerState>>) -> Response {
    s.jwks_requests.fetch_add(1, Ordering::SeqCst);
    if s.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    Json(s.jwks.lock().unwrap().clone()).into_response()
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An app that trusts `issuer`: `group-a` may ingest and read, `group-b` may only read.
async fn app_trusting(issuer: &TestIssuer) -> TestApp {
    spawn_with(
        Options::default()
            .env("OIDC_ISSUERS", issuer.url())
            .env("OIDC_AUDIENCE", AUDIENCE)
            .env("OIDC_SCOPE_CLAIM", "groups")
            .env("OIDC_SCOPE_MAP", "group-a=ingest+read,group-b=read"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_entry_qualified_by_an_issuer_grants_nothing_to_another_issuers_tokens() {
    if skip_here("a_map_entry_qualified_by_an_issuer_grants_nothing_to_another_issuers_tokens") {
        return;
    }
    let (google_key, okta_key) = (SigningKey::rsa("g-1"), SigningKey::ec("o-1"));
    let (google, okta) = (
        TestIssuer::start(&[&google_key]).await,
        TestIssuer::start(&[&okta_key]).await,
    );
    let sa = "ci@project.iam.gserviceaccount.com";
    let app = spawn_with(
        Options::default()
            .env("OIDC_ISSUERS", &format!("{},{}", google.url(), okta.url()))
            .env("OIDC_AUDIENCE", AUDIENCE)
            .env("OIDC_SCOPE_CLAIM", "groups,email")
            .env(
                "OIDC_SCOPE_MAP",
                &format!("{}#{sa}=ingest+read,writers=ingest", google.url()),
            ),
    )
    .await;
    let with_email = |issuer: &TestIssuer, key: &SigningKey| {
        let mut c = issuer.claims("1234567890", &[]);
        c["email"] = json!(sa);
        key.sign(&c)
    };
    let from_google = with_email(&google, &google_key);
    let from_okta = with_email(&okta, &okta_key);
    assert_eq!(
        app.get_data_as("limit=1", Some(&from_google))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.get_data_as("limit=1", Some(&from_okta)).await.status(),
        403
    );
    // Unqualified entries match every issuer.
    let writer = okta_key.sign(&okta.claims("someone", &["writers"]));
    assert_eq!(ingest_as(&app, &writer).await.status(), 200);
}

async fn ingest_as(app: &TestApp, token: &str) -> reqwest::Response {
    app.ingest_raw(
        record(&unique("oidc"), "Token Holder")
            .to_string()
            .into_bytes(),
        "application/json",
        Some(token),
    )
    .await
}

fn www_authenticate(r: &reqwest::Response) -> String {
    r.headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_a_trusted_issuer_get_their_mapped_scopes_and_api_keys_still_work() {
    if skip_here("tokens_from_a_trusted_issuer_get_their_mapped_scopes_and_api_keys_still_work") {
        return;
    }
    let (rsa, ec) = (SigningKey::rsa("rsa-1"), SigningKey::ec("ec-1"));
    let issuer = TestIssuer::start(&[&rsa, &ec]).await;
    let app = app_trusting(&issuer).await;

    let writer_rsa = rsa.sign(&issuer.claims("writer", &["group-a"]));
    let writer_ec = ec.sign(&issuer.claims("writer-ec", &["group-a", "unknown"]));
    let reader = ec.sign(&issuer.claims("reader@example.com", &["group-b"]));
    let nobody = rsa.sign(&issuer.claims("nobody", &["group-z"]));

    for token in [&writer_rsa, &writer_ec] {
        assert_eq!(ingest_as(&app, token).await.status(), 200);
        assert_eq!(app.get_data_as("limit=1", Some(token)).await.status(), 200);
    }
    assert_eq!(
        app.get_data_as("limit=1", Some(&reader)).await.status(),
        200
    );
    let r = ingest_as(&app, &reader).await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        www_authenticate(&r),
        r#"Bearer error="insufficient_scope", scope="ingest""#
    );
    // A role nobody mapped grants nothing.
    assert_eq!(
        app.get_data_as("limit=1", Some(&nobody)).await.status(),
        403
    );
    assert_eq!(ingest_as(&app, &nobody).await.status(), 403);

    // API keys are unaffected.
    assert_eq!(
        app.get_data_as("limit=1", Some(KEY_ALL)).await.status(),
        200
    );
    assert_eq!(
        app.get_data_as("limit=1", Some(KEY_INGEST)).await.status(),
        403
    );
    assert_eq!(
        app.get_data_as("limit=1", Some("not-a-key")).await.status(),
        401
    );

    let oidc_ok = app
        .metric_sum(
            "app_auth_requests_total",
            &[("auth_method", "oidc"), ("outcome", "success")],
        )
        .await;
    let key_ok = app
        .metric_sum(
            "app_auth_requests_total",
            &[("auth_method", "api_key"), ("outcome", "success")],
        )
        .await;
    assert_eq!(oidc_ok, 8.0);
    assert_eq!(key_ok, 2.0);

    // Callers are known by subject (an email hashed), never by their token.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = format!("{}{}", app.logs(), app.log_file());
    assert!(logs.contains("oidc:writer"), "{logs}");
    assert!(!logs.contains("reader@example.com"));
    for token in [&writer_rsa, &writer_ec, &reader, &nobody] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!logs.contains(signature), "a token reached the logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_401_invalid_token() {
    if skip_here("bad_tokens_are_401_invalid_token") {
        return;
    }
    let (rsa, ec) = (SigningKey::rsa("rsa-1"), SigningKey::ec("ec-1"));
    let issuer = TestIssuer::start(&[&rsa, &ec]).await;
    let app = app_trusting(&issuer).await;
    let valid = issuer.claims("writer", &["group-a"]);
    let with = |k: &str, v: Value| {
        let mut c = valid.clone();
        c[k] = v;
        c
    };
    let now = now();

    let good = rsa.sign(&valid);
    let [head, payload, signature]: [&str; 3] =
        good.split('.').collect::<Vec<_>>().try_into().unwrap();
    let other_payload = b64(with("sub", json!("someone-else")).to_string().as_bytes());
    let mut flipped = signature.as_bytes().to_vec();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    let none_header = b64(br#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#);
    let rsa_public = issuer.state.jwks.lock().unwrap()["keys"][0].to_string();
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some("rsa-1".into());
    let hs256_with_public_key = jsonwebtoken::encode(
        &hs_header,
        &valid,
        &EncodingKey::from_secret(rsa_public.as_bytes()),
    )
    .unwrap();
    // An EC token whose header claims the RSA key.
    let mut wrong_family = Header::new(Algorithm::ES256);
    wrong_family.kid = Some("rsa-1".into());
    let es256_naming_an_rsa_key =
        jsonwebtoken::encode(&wrong_family, &valid, &ec.encoding).unwrap();

    let cases: Vec<(&str, String)> = vec![
        ("expired", rsa.sign(&with("exp", json!(now - 3600)))),
        ("not yet valid", rsa.sign(&with("nbf", json!(now + 3600)))),
        (
            "issued in the future",
            rsa.sign(&with("iat", json!(now + 3600))),
        ),
        (
            "wrong audience",
            rsa.sign(&with("aud", json!("another-api"))),
        ),
        (
            "wrong issuer",
            rsa.sign(&with("iss", json!("https://evil.example"))),
        ),
        (
            "issuer with a trailing slash",
            rsa.sign(&with("iss", json!(format!("{}/", issuer.url())))),
        ),
        ("no subject", rsa.sign(&with("sub", json!("")))),
        ("alg none", format!("{none_header}.{payload}.")),
        ("HS256 signed with the public key", hs256_with_public_key),
        ("ES256 naming an RSA key", es256_naming_an_rsa_key),
        (
            "tampered payload",
            format!("{head}.{other_payload}.{signature}"),
        ),
        (
            "tampered signature",
            format!("{head}.{payload}.{}", String::from_utf8(flipped).unwrap()),
        ),
        (
            "oversized",
            rsa.sign(&with("padding", json!("x".repeat(9 * 1024)))),
        ),
        ("not JSON", "aGVsbG8.d29ybGQ.c2ln".to_owned()),
    ];
    for (case, token) in &cases {
        let r = app.get_data_as("limit=1", Some(token)).await;
        assert_eq!(r.status(), 401, "{case}");
        assert_eq!(
            www_authenticate(&r),
            r#"Bearer error="invalid_token""#,
            "{case}"
        );
        assert_eq!(
            r.headers().get("content-type").unwrap(),
            "application/problem+json",
            "{case}"
        );
    }
    // The good one still works: nothing above poisoned the cache.
    assert_eq!(app.get_data_as("limit=1", Some(&good)).await.status(), 200);
    let invalid = app
        .metric_sum(
            "app_auth_requests_total",
            &[("auth_method", "oidc"), ("outcome", "invalid")],
        )
        .await;
    assert_eq!(invalid, cases.len() as f64);
    let logs = format!("{}{}", app.logs(), app.log_file());
    for (case, token) in &cases {
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            signature.len() < 8 || !logs.contains(signature),
            "{case}: a token reached the logs"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_unknown_key_ids_fetches_the_jwks_once() {
    if skip_here("a_burst_of_unknown_key_ids_fetches_the_jwks_once") {
        return;
    }
    let rsa = SigningKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&rsa]).await;
    let app = app_trusting(&issuer).await;
    let before = issuer.jwks_requests();
    assert_eq!(before, 1, "one fetch at start");

    let made_up: Vec<String> = (0..30)
        .map(|i| {
            let mut h = Header::new(Algorithm::RS256);
            h.kid = Some(format!("made-up-{i}"));
            jsonwebtoken::encode(&h, &issuer.claims("x", &["group-a"]), &rsa.encoding).unwrap()
        })
        .collect();
    let answers =
        futures::future::join_all(made_up.iter().map(|t| app.get_data_as("limit=1", Some(t))))
            .await;
    for r in &answers {
        assert_eq!(r.status(), 401);
    }
    // And again, one by one, after the burst.
    for t in &made_up[..5] {
        assert_eq!(app.get_data_as("limit=1", Some(t)).await.status(), 401);
    }
    assert_eq!(issuer.jwks_requests(), before + 1);
    assert_eq!(
        app.metric_sum("app_oidc_jwks_fetches_total", &[("reason", "unknown_kid")])
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_fetched_when_a_token_first_names_it() {
    if skip_here("a_rotated_key_is_fetched_when_a_token_first_names_it") {
        return;
    }
    let (old, new) = (SigningKey::rsa("old"), SigningKey::ec("new"));
    let issuer = TestIssuer::start(&[&old]).await;
    let app = app_trusting(&issuer).await;
    let old_token = old.sign(&issuer.claims("writer", &["group-a"]));
    assert_eq!(
        app.get_data_as("limit=1", Some(&old_token)).await.status(),
        200
    );

    issuer.publish(&[&new]);
    let new_token = new.sign(&issuer.claims("writer", &["group-a"]));
    assert_eq!(
        app.get_data_as("limit=1", Some(&new_token)).await.status(),
        200
    );
    assert_eq!(issuer.jwks_requests(), 2);
    // The retired key is gone with the refresh.
    assert_eq!(
        app.get_data_as("limit=1", Some(&old_token)).await.status(),
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_down_at_start_means_503_for_its_tokens_until_it_answers() {
    if skip_here("an_issuer_down_at_start_means_503_for_its_tokens_until_it_answers") {
        return;
    }
    let rsa = SigningKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&rsa]).await;
    issuer.set_down(true);
    let app = app_trusting(&issuer).await;
    let token = rsa.sign(&issuer.claims("writer", &["group-a"]));

    let r = app.get_data_as("limit=1", Some(&token)).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    let (_, ready) = app.readyz().await;
    assert_eq!(
        ready["oidc"][issuer.url()],
        "unreachable_no_keys",
        "{ready}"
    );
    // API keys do not depend on the issuer.
    assert_eq!(
        app.get_data_as("limit=1", Some(KEY_ALL)).await.status(),
        200
    );

    issuer.set_down(false);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = app.get_data_as("limit=1", Some(&token)).await.status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(
            Instant::now() < deadline,
            "the issuer came back but tokens still fail"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (_, ready) = app.readyz().await;
    assert_eq!(ready["oidc"][issuer.url()], "ok", "{ready}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_keys_keep_working_when_the_issuer_goes_down() {
    if skip_here("cached_keys_keep_working_when_the_issuer_goes_down") {
        return;
    }
    let rsa = SigningKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&rsa]).await;
    let app = app_trusting(&issuer).await;
    let token = rsa.sign(&issuer.claims("writer", &["group-a"]));
    assert_eq!(app.get_data_as("limit=1", Some(&token)).await.status(), 200);

    issuer.set_down(true);
    // An unknown key id makes the service try the issuer, which fails.
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("rotated-in".into());
    let unknown =
        jsonwebtoken::encode(&h, &issuer.claims("writer", &["group-a"]), &rsa.encoding).unwrap();
    assert_eq!(
        app.get_data_as("limit=1", Some(&unknown)).await.status(),
        401
    );
    let (_, ready) = app.readyz().await;
    assert_eq!(ready["oidc"][issuer.url()], "unreachable", "{ready}");
    assert_eq!(app.get_data_as("limit=1", Some(&token)).await.status(), 200);
    assert_eq!(ingest_as(&app, &token).await.status(), 200);
}

#[tokio::test]
async fn the_openapi_document_offers_api_keys_and_oidc_tokens_on_both_api_routes() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["api_key"]["scheme"], "bearer");
    assert_eq!(schemes["oidc"]["scheme"], "bearer");
    assert_eq!(schemes["oidc"]["bearerFormat"], "JWT");
    for (path, method) in [
        ("/challenge-latam-api/ingestData", "post"),
        ("/challenge-latam-api/getData", "get"),
    ] {
        let security = &doc["paths"][path][method]["security"];
        assert_eq!(
            security,
            &json!([{ "api_key": [] }, { "oidc": [] }]),
            "{path}: either credential"
        );
    }
}

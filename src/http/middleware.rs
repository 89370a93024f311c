//! The rate limiter of the API stack (see `http` for the order) and the problem answers for
//! unmatched routes.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Response as HttpResponse};
use axum::response::IntoResponse;
use tower_governor::governor::{GovernorConfig, GovernorConfigBuilder};
use tower_governor::key_extractor::KeyExtractor;
use tower_governor::{GovernorError, GovernorLayer};

use super::auth::ClientKey;
use super::error::ApiError;

/// 404 as problem+json.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// 405 as problem+json.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Keys the rate limiter by the [`ClientKey`] that authentication recorded.
#[derive(Clone)]
pub struct ClientKeyExtractor;

impl KeyExtractor for ClientKeyExtractor {
    type Key = ClientKey;

    fn extract<T>(&self, req: &axum::http::Request<T>) -> Result<Self::Key, GovernorError> {
        req.extensions()
            .get::<ClientKey>()
            .cloned()
            .ok_or(GovernorError::UnableToExtractKey)
    }
}

type Config = GovernorConfig<ClientKeyExtractor, governor::middleware::StateInformationMiddleware>;

/// The per-client rate limit (a GCRA bucket per key id, or per address when auth is off).
#[derive(Clone)]
pub struct RateLimit {
    config: Arc<Config>,
}

impl RateLimit {
    /// `per_second` sustained, bursts of `burst`.
    pub fn new(per_second: f64, burst: u32) -> Self {
        let period = Duration::from_secs_f64(1.0 / per_second).max(Duration::from_nanos(1));
        let config = GovernorConfigBuilder::default()
            .period(period)
            .burst_size(burst)
            .key_extractor(ClientKeyExtractor)
            .use_headers()
            .finish()
            .expect("period and burst are checked in config");
        Self {
            config: Arc::new(config),
        }
    }

    /// The tower layer; 429s become problem+json with a `Retry-After` of at least 1 s.
    pub fn layer(
        &self,
    ) -> GovernorLayer<ClientKeyExtractor, governor::middleware::StateInformationMiddleware, Body>
    {
        GovernorLayer::new(self.config.clone()).error_handler(|e| -> HttpResponse<Body> {
            match e {
                GovernorError::TooManyRequests { wait_time, headers } => {
                    let wait = wait_time.max(1);
                    let mut response = ApiError::RateLimited(wait).into_response();
                    if let Some(h) = headers {
                        for (k, v) in h.iter() {
                            if k != axum::http::header::RETRY_AFTER
                                && k.as_str() != "x-ratelimit-after"
                            {
                                response.headers_mut().insert(k.clone(), v.clone());
                            }
                        }
                    }
                    response
                        .headers_mut()
                        .insert("x-ratelimit-after", HeaderValue::from(wait));
                    response
                }
                other => ApiError::Internal(format!("rate limiter: {other}")).into_response(),
            }
        })
    }

    /// Forgets idle clients every `every`, so memory stays bounded however many keys or
    /// addresses have called.
    pub fn spawn_eviction(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let config = self.config.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                evict(&config);
            }
        })
    }

    /// Clients currently tracked.
    pub fn tracked(&self) -> usize {
        self.config.limiter().len()
    }
}

/// Drops every client whose bucket is full again (idle long enough that forgetting it changes
/// nothing) and gives the memory back.
fn evict(config: &Config) {
    config.limiter().retain_recent();
    config.limiter().shrink_to_fit();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_clients_are_forgotten_so_memory_stays_bounded() {
        let limit = RateLimit::new(1000.0, 1);
        for i in 0..10_000 {
            let key = ClientKey(format!("client-{i}").into());
            assert!(limit.config.limiter().check_key(&key).is_ok());
        }
        assert_eq!(limit.tracked(), 10_000);
        // One token at 1000/s refills in 1 ms; after that every bucket is full again.
        tokio::time::sleep(Duration::from_millis(20)).await;
        evict(&limit.config);
        assert_eq!(limit.tracked(), 0);
    }
}

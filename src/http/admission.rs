//! Admission of API requests: load shedding, drill faults, authentication and the route's
//! scope, as two plain tower layers.
//!
//! They were `axum::middleware::from_fn` functions, one per concern. Each `from_fn` layer
//! boxes its future, boxes the rest of the stack into a `Next`, and clones every layer inside
//! it on every request, so the cost grew with the square of the number of layers; together
//! they were most of what the middleware cost (docs/benchmarks.md). Here admission is one
//! synchronous decision in `call`, and an admitted request's future is the handler's own,
//! wrapped without a box.

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures::future::{BoxFuture, Either};
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service, ServiceExt};

use super::auth::{self, AuthState, Rejection, Scope};
use super::error::ApiError;
use crate::adapters::faults::FaultSwitch;

/// Shared by every route's admission layer.
struct Gate {
    /// At most `MAX_IN_FLIGHT` API requests at once.
    permits: Arc<Semaphore>,
    faults: Arc<FaultSwitch>,
    auth: AuthState,
}

/// In order: shed (503 at once past `MAX_IN_FLIGHT`, instead of queueing until every request
/// is slow), drill faults (latency, injected 500s; a no-op unless switched on), authenticate
/// (401). The permit is held until the response is produced.
#[derive(Clone)]
pub struct AdmitLayer(Arc<Gate>);

impl AdmitLayer {
    /// A gate of `max_in_flight` permits.
    pub fn new(max_in_flight: usize, faults: Arc<FaultSwitch>, auth: AuthState) -> Self {
        Self(Arc::new(Gate {
            permits: Arc::new(Semaphore::new(max_in_flight)),
            faults,
            auth,
        }))
    }
}

impl<S> Layer<S> for AdmitLayer {
    type Service = Admit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Admit {
            inner,
            gate: self.0.clone(),
        }
    }
}

/// See [`AdmitLayer`].
#[derive(Clone)]
pub struct Admit<S> {
    inner: S,
    gate: Arc<Gate>,
}

impl<S> Service<Request> for Admit<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = AdmitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let Ok(permit) = self.gate.permits.clone().try_acquire_owned() else {
            return AdmitFuture::rejected(ApiError::Overloaded);
        };
        let faults = self.gate.faults.get();
        let drill = faults.http_latency_ms > 0 || faults.http_error_rate > 0.0;
        // Without a drill, authenticate here: nearly every request is admitted or refused
        // synchronously, without a box.
        let refresh = if drill {
            None
        } else {
            match self.gate.auth.authenticate(&mut req) {
                Ok(()) => {
                    return AdmitFuture::Admitted {
                        future: self.inner.call(req),
                        permit,
                    }
                }
                Err(Rejection::Error(e)) => return AdmitFuture::rejected(e),
                // Rare (a key rotation, or a made-up key id at most once per interval per
                // issuer): this request waits for the refresh, on the slow path below.
                Err(Rejection::Refresh(issuer)) => Some(issuer),
            }
        };
        // The slow path, for drills and key refreshes only: it may box and clone. The service
        // that was polled ready is the one that goes; its clone stays for the next request.
        let gate = self.gate.clone();
        let inner = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, inner);
        AdmitFuture::Faulty {
            future: Box::pin(async move {
                let _permit = permit;
                if faults.http_latency_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(faults.http_latency_ms)).await;
                }
                if faults.http_error_rate > 0.0 && rand::random::<f64>() < faults.http_error_rate {
                    return ApiError::InjectedFault.into_response();
                }
                let authenticated = match refresh {
                    Some(issuer) => gate.auth.authenticate_after_refresh(&mut req, issuer).await,
                    None => gate.auth.authenticate_async(&mut req).await,
                };
                if let Err(e) = authenticated {
                    return e.into_response();
                }
                match inner.oneshot(req).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            }),
        }
    }
}

pin_project! {
    /// The future of [`Admit`]: the handler's own future while admitted.
    #[project = AdmitProj]
    pub enum AdmitFuture<F> {
        Admitted { #[pin] future: F, permit: OwnedSemaphorePermit },
        Rejected { response: Option<Response> },
        Faulty { future: BoxFuture<'static, Response> },
    }
}

impl<F> AdmitFuture<F> {
    fn rejected(e: ApiError) -> Self {
        AdmitFuture::Rejected {
            response: Some(e.into_response()),
        }
    }
}

impl<F> Future for AdmitFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AdmitProj::Admitted { future, .. } => future.poll(cx),
            AdmitProj::Rejected { response } => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
            AdmitProj::Faulty { future } => future.as_mut().poll(cx).map(Ok),
        }
    }
}

/// Route layer: 403 unless the authenticated caller has `scope`.
#[derive(Clone, Copy)]
pub struct RequireLayer(pub Scope);

impl<S> Layer<S> for RequireLayer {
    type Service = Require<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Require {
            inner,
            scope: self.0,
        }
    }
}

/// See [`RequireLayer`].
#[derive(Clone)]
pub struct Require<S> {
    inner: S,
    scope: Scope,
}

impl<S> Service<Request> for Require<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, Ready<Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match auth::require(&req, self.scope) {
            Ok(()) => Either::Left(self.inner.call(req)),
            Err(e) => Either::Right(ready(Ok(e.into_response()))),
        }
    }
}

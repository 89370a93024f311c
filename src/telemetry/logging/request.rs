//! The request's log fields, and the scope that makes them the current request's on a thread
//! while its future is polled.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::Arc;

use super::fields::Line;
use super::json::Val;

/// The fields every log line of one request carries. The request's future owns them and
/// moves them into a thread-local while it runs ([`RequestScope`]), so an event anywhere
/// inside the request (an error from a handler) gets them without a span.
#[derive(Debug)]
pub struct RequestFields {
    /// `http.request.method`.
    pub method: &'static str,
    /// `http.route`: the matched template; none when nothing matched.
    pub route: Option<Cow<'static, str>>,
    /// `url.scheme`.
    pub scheme: &'static str,
    /// `url.path`.
    pub path: String,
    /// `client.key_id`, once authentication has identified the caller.
    pub key_id: Option<Arc<str>>,
    /// Trace and span ids (hex): the server span's with OTLP on, else the caller's
    /// `traceparent`.
    pub trace: Option<(String, String)>,
}

impl RequestFields {
    fn write(&self, line: &mut Line<'_>) {
        line.field("http.request.method", Val::Str(self.method));
        if let Some(route) = &self.route {
            line.field("http.route", Val::Str(route));
        }
        line.field("url.scheme", Val::Str(self.scheme));
        line.field("url.path", Val::Str(&self.path));
        if let Some(key) = &self.key_id {
            line.field("client.key_id", Val::Str(key));
        }
        if let Some((trace, span)) = &self.trace {
            line.field("trace_id", Val::Str(trace));
            line.field("span_id", Val::Str(span));
        }
    }
}

thread_local! {
    /// The fields of the request this thread is running, if any.
    static REQUEST: RefCell<Option<RequestFields>> = const { RefCell::new(None) };
}

/// While alive, `slot`'s fields are the current request's on this thread; on drop (also on a
/// panic) they go back into `slot` and whatever was current before is current again.
pub struct RequestScope<'a> {
    slot: &'a mut Option<RequestFields>,
    prev: Option<RequestFields>,
}

impl<'a> RequestScope<'a> {
    /// Makes `slot`'s fields current (`slot` is empty until the scope ends).
    pub fn enter(slot: &'a mut Option<RequestFields>) -> Self {
        let prev = REQUEST.with(|r| r.replace(slot.take()));
        Self { slot, prev }
    }
}

impl Drop for RequestScope<'_> {
    fn drop(&mut self) {
        *self.slot = REQUEST.with(|r| r.replace(self.prev.take()));
    }
}

/// Records the caller's key id on the current request (authentication calls it).
pub fn record_key_id(id: &Arc<str>) {
    REQUEST.with(|r| {
        if let Ok(mut current) = r.try_borrow_mut() {
            if let Some(fields) = current.as_mut() {
                fields.key_id = Some(id.clone());
            }
        }
    });
}

/// Writes the current request's fields into `line`, if a request is current.
pub(super) fn write_current(line: &mut Line<'_>) {
    REQUEST.with(|r| {
        if let Ok(current) = r.try_borrow() {
            if let Some(fields) = current.as_ref() {
                fields.write(line);
            }
        }
    });
}

//! The same metrics over OTLP, for the Datadog agent sidecar on Cloud Run (`serverless-init`
//! receives OTLP on localhost:4317 and scrapes no Prometheus endpoint).
//!
//! A `metrics::Recorder` that turns every metric the service records through the `metrics`
//! facade into an OpenTelemetry instrument with the same name, unit, description and
//! attributes, so the Prometheus scrape and the OTLP export can never disagree on what exists:
//! - counters are monotonic sums, exported with delta temporality (what Datadog recommends:
//!   each point is the increase since the last export);
//! - histograms keep the contract's explicit buckets (an SLO threshold stays a bucket bound);
//! - gauges are observable gauges read at each export, so a value set once (`app_build_info`,
//!   `http_server_max_active_requests`) is reported every interval, not only when it changes.
//!
//! Labels with an empty value are left out, as Prometheus treats them (`error_type=""` is the
//! same series as no `error_type`). Installed beside the Prometheus recorder only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set; otherwise none of this runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use opentelemetry::metrics::Meter;
use opentelemetry::KeyValue;

/// Bucket bounds per histogram name (the contract's); others get the SDK's defaults.
pub type Buckets = fn(&str) -> Option<&'static [f64]>;

type GaugeSeries = Arc<RwLock<Vec<(Vec<KeyValue>, Arc<AtomicF64>)>>>;

/// Forwards the `metrics` facade to an OpenTelemetry meter (see the module docs).
pub struct OtelRecorder {
    meter: Meter,
    buckets: Buckets,
    descriptions: Mutex<HashMap<String, (Option<Unit>, SharedString)>>,
    counters: RwLock<HashMap<Key, Arc<OtelCounter>>>,
    histograms: RwLock<HashMap<Key, Arc<OtelHistogram>>>,
    gauges: RwLock<HashMap<Key, Arc<AtomicF64>>>,
    /// One observable gauge per name; its callback reports every series of that name.
    gauge_series: Mutex<HashMap<String, GaugeSeries>>,
    counter_instruments: Mutex<HashMap<String, opentelemetry::metrics::Counter<u64>>>,
    histogram_instruments: Mutex<HashMap<String, opentelemetry::metrics::Histogram<f64>>>,
}

impl OtelRecorder {
    /// A recorder writing to `meter`, with histogram bounds from `buckets`.
    pub fn new(meter: Meter, buckets: Buckets) -> Self {
        Self {
            meter,
            buckets,
            descriptions: Mutex::default(),
            counters: RwLock::default(),
            histograms: RwLock::default(),
            gauges: RwLock::default(),
            gauge_series: Mutex::default(),
            counter_instruments: Mutex::default(),
            histogram_instruments: Mutex::default(),
        }
    }

    fn describe(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        lock(&self.descriptions).insert(key.as_str().to_owned(), (unit, description));
    }

    /// The observable gauge of `name`; its callback reports every series registered since.
    fn observable_gauge(&self, name: String) -> GaugeSeries {
        let series: GaugeSeries = Arc::default();
        let read = series.clone();
        let (unit, description) = self.meta(&name);
        let mut b = self
            .meter
            .f64_observable_gauge(name)
            .with_callback(move |observer| {
                for (attrs, v) in read.read().unwrap_or_else(|e| e.into_inner()).iter() {
                    observer.observe(v.get(), attrs);
                }
            });
        if let Some(u) = unit {
            b = b.with_unit(u);
        }
        if let Some(d) = description {
            b = b.with_description(d);
        }
        // The SDK keeps the callback for the meter provider's lifetime.
        let _ = b.build();
        series
    }

    /// UCUM unit and description of `name`, as described at start.
    fn meta(&self, name: &str) -> (Option<&'static str>, Option<String>) {
        match lock(&self.descriptions).get(name) {
            Some((unit, d)) => (unit.map(ucum), Some(d.to_string())),
            None => (None, None),
        }
    }
}

fn attributes(key: &Key) -> Vec<KeyValue> {
    key.labels()
        .filter(|l| !l.value().is_empty())
        .map(|l| KeyValue::new(l.key().to_owned(), l.value().to_owned()))
        .collect()
}

/// The UCUM code OpenTelemetry uses for a `metrics` unit.
fn ucum(unit: Unit) -> &'static str {
    match unit {
        Unit::Seconds => "s",
        Unit::Milliseconds => "ms",
        Unit::Microseconds => "us",
        Unit::Nanoseconds => "ns",
        Unit::Bytes => "By",
        Unit::Percent => "%",
        _ => "1",
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Looks `key` up under a read lock; creates it under the write lock on first use.
fn cached<V: Clone>(map: &RwLock<HashMap<Key, V>>, key: &Key, make: impl FnOnce() -> V) -> V {
    if let Some(v) = map.read().unwrap_or_else(|e| e.into_inner()).get(key) {
        return v.clone();
    }
    map.write()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key.clone())
        .or_insert_with(make)
        .clone()
}

struct OtelCounter {
    counter: opentelemetry::metrics::Counter<u64>,
    attributes: Vec<KeyValue>,
    /// For `absolute`: the last total seen, so the export gets the increase.
    total: AtomicU64,
}

impl CounterFn for OtelCounter {
    fn increment(&self, value: u64) {
        self.total.fetch_add(value, Ordering::Relaxed);
        self.counter.add(value, &self.attributes);
    }

    fn absolute(&self, value: u64) {
        let before = self.total.fetch_max(value, Ordering::Relaxed);
        if value > before {
            self.counter.add(value - before, &self.attributes);
        }
    }
}

struct OtelHistogram {
    histogram: opentelemetry::metrics::Histogram<f64>,
    attributes: Vec<KeyValue>,
}

impl HistogramFn for OtelHistogram {
    fn record(&self, value: f64) {
        self.histogram.record(value, &self.attributes);
    }
}

/// An f64 in an atomic, read by the observable gauge's callback.
#[derive(Default)]
struct AtomicF64(AtomicU64);

impl AtomicF64 {
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    fn update(&self, f: impl Fn(f64) -> f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some(f(f64::from_bits(bits)).to_bits())
            });
    }
}

impl GaugeFn for AtomicF64 {
    fn increment(&self, value: f64) {
        self.update(|v| v + value);
    }
    fn decrement(&self, value: f64) {
        self.update(|v| v - value);
    }
    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

impl Recorder for OtelRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(cached(&self.counters, key, || {
            let name = key.name().to_owned();
            let counter = lock(&self.counter_instruments)
                .entry(name.clone())
                .or_insert_with(|| {
                    let (unit, description) = self.meta(&name);
                    let mut b = self.meter.u64_counter(name.clone());
                    if let Some(u) = unit {
                        b = b.with_unit(u);
                    }
                    if let Some(d) = description {
                        b = b.with_description(d);
                    }
                    b.build()
                })
                .clone();
            Arc::new(OtelCounter {
                counter,
                attributes: attributes(key),
                total: AtomicU64::new(0),
            })
        }))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(cached(&self.gauges, key, || {
            let name = key.name().to_owned();
            let value = Arc::new(AtomicF64::default());
            lock(&self.gauge_series)
                .entry(name.clone())
                .or_insert_with(|| self.observable_gauge(name))
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .push((attributes(key), value.clone()));
            value
        }))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(cached(&self.histograms, key, || {
            let name = key.name().to_owned();
            let histogram = lock(&self.histogram_instruments)
                .entry(name.clone())
                .or_insert_with(|| {
                    let (unit, description) = self.meta(&name);
                    let mut b = self.meter.f64_histogram(name.clone());
                    if let Some(bounds) = (self.buckets)(&name) {
                        b = b.with_boundaries(bounds.to_vec());
                    }
                    if let Some(u) = unit {
                        b = b.with_unit(u);
                    }
                    if let Some(d) = description {
                        b = b.with_description(d);
                    }
                    b.build()
                })
                .clone();
            Arc::new(OtelHistogram {
                histogram,
                attributes: attributes(key),
            })
        }))
    }
}

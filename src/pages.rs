//! getData's read path between the handler and the query port: pages of records serialized
//! once, kept for a bounded time, shared by concurrent identical requests, and bounded in the
//! store queries they may have running at once.
//!
//! Every getData is otherwise one query to the store: on `BACKEND=gcp` one BigQuery job, with
//! its second of latency, its bytes billed and BigQuery's per-project concurrency. `startup`
//! builds one [`Pages`] over whichever store runs, so handlers and both backends get this
//! without knowing:
//!
//! - **Cache.** Keyed by the normalized filter ([`FilterKey`]: a default window is "the newest
//!   rows", not a window that moves every microsecond) and by a generation (below). Entries
//!   are served for at most `QUERY_CACHE_TTL_MS` and are bounded in entries and bytes, evicted
//!   by quick_cache's S3-FIFO policy. The cached value is the page as sent: body bytes, `Link`
//!   and `ETag`, so a hit encodes nothing.
//! - **Coalescing.** Concurrent identical misses run one query and share its page (quick_cache's
//!   placeholder); a failed query is not cached and every waiter gets its error.
//! - **Invalidation.** Where this process writes rows (the embedded pipeline, or the gcp
//!   worker), each commit bumps a generation per customer bucket and one for all customers,
//!   read into the key *before* the query starts: a page computed before a commit is never
//!   served after it, so local reads stay read-your-writes. With the native BigQuery
//!   subscription the process does not see writes, and the TTL is the staleness bound.
//! - **In-flight bound.** At most `QUERY_MAX_IN_FLIGHT` store queries at once; a query waits
//!   at most `QUERY_QUEUE_TIMEOUT_MS` for a slot, then the answer is 503 with `Retry-After`,
//!   instead of piling jobs on BigQuery's queue.
//!
//! quick_cache rather than moka (used until 2026-12-08): moka's lookup, with the read log and
//! housekeeping it keeps for its policy, made a cached by-customer request cost 17.1 µs of CPU
//! against 14.2 (same-minute pairs, docs/benchmarks.md, "The page cache's lookup"). quick_cache
//! has no time-to-live, so the age is checked here: a page past the TTL is never served, is
//! removed when a lookup finds it, and the upkeep task drops the rest.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use metrics::{Counter, Gauge, Histogram};
use quick_cache::sync::Cache;
use quick_cache::{Lifecycle, Weighter};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::domain::{FilterKey, RecordFilter};
use crate::ports::{DependencyError, ErrorKind, JsonPage, RecordQuery, Row, RowWriter};
use crate::telemetry::{self, metrics as names};

/// How the read path is bounded.
#[derive(Debug, Clone, Copy)]
pub struct PagesConfig {
    /// `QUERY_CACHE_TTL_MS`: how long a page may be served after it was computed; zero turns
    /// the cache (and coalescing) off.
    pub ttl: Duration,
    /// `QUERY_CACHE_MAX_BYTES`: bound on the bytes of cached pages.
    pub max_bytes: u64,
    /// `QUERY_CACHE_MAX_ENTRIES`: bound on the number of cached pages.
    pub max_entries: u64,
    /// `QUERY_MAX_IN_FLIGHT`: store queries running at once.
    pub max_in_flight: usize,
    /// `QUERY_QUEUE_TIMEOUT_MS`: how long a query may wait for one of those slots before
    /// getData answers 503.
    pub queue_timeout: Duration,
}

/// One getData page, ready to send.
#[derive(Debug)]
pub struct Page {
    /// The JSON array of records.
    pub body: Bytes,
    /// `Link: <...>; rel="next"` when another page exists.
    pub link: Option<HeaderValue>,
    /// A strong validator of body and link, for `If-None-Match`.
    pub etag: HeaderValue,
    /// When the store answered.
    pub made: Instant,
}

impl Page {
    /// Whether the page may still be served at `now`: the one test of the TTL, for lookups,
    /// the upkeep and evictions alike.
    fn fresh(&self, now: Instant, ttl: Duration) -> bool {
        now.saturating_duration_since(self.made) < ttl
    }
}

/// Fixed cost counted for every entry besides its body (key, link, etag, the cache's slot).
const ENTRY_OVERHEAD: u64 = 512;
/// Shards of the page cache (see `Pages::new`).
const SHARDS: usize = 4;
/// Customer buckets of the invalidation generations: a commit for one customer makes the
/// pages of the customers in its bucket stale too, which costs a query, never a wrong page.
const BUCKETS: usize = 1024;

/// What the cache holds for a key: a page, or for an instant the error of a failed query, so
/// that the requests waiting on that query get it (it is removed as soon as they have).
type Answer = Result<Arc<Page>, DependencyError>;
type PageCache = Cache<PageKey, Answer, Weigh, quick_cache::DefaultHashBuilder, Evictions>;

/// The read path; built once in `startup`.
pub struct Pages {
    store: Arc<dyn RecordQuery>,
    cache: Option<Arc<PageCache>>,
    ttl: Duration,
    generations: Arc<Generations>,
    in_flight: Arc<Semaphore>,
    queue_timeout: Duration,
    metrics: Arc<PageMetrics>,
    db_system: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PageKey {
    filter: FilterKey,
    generation: u64,
}

impl Pages {
    /// The read path over `store` (`db_system` names it in spans).
    pub fn new(store: Arc<dyn RecordQuery>, config: PagesConfig, db_system: &'static str) -> Self {
        let metrics = Arc::new(PageMetrics::register(config));
        let cache = (!config.ttl.is_zero()).then(|| {
            // One weight bounds both: every entry weighs at least max_bytes / max_entries
            // (rounded up, so that max_entries + 1 of them overflow), so the weights (capacity
            // max_bytes) admit at most max_entries entries, and at least its bytes, so they
            // admit at most max_bytes of pages. The floor is capped at 90 % of the bytes so that
            // with max_entries = 1 that one page still fits under quick_cache's refusal of
            // anything over 97 % of its capacity.
            let floor = config
                .max_bytes
                .div_ceil(config.max_entries.max(1))
                .min(config.max_bytes / 10 * 9)
                .max(1);
            // Every entry weighs at least ENTRY_OVERHEAD, so no more than max_bytes /
            // ENTRY_OVERHEAD fit whatever max_entries says; quick_cache sizes its record of
            // recently evicted keys from this estimate, so it stays bounded by the bytes too.
            let most = config
                .max_entries
                .min(config.max_bytes / ENTRY_OVERHEAD)
                .max(1);
            // Each shard bounds its share of the bytes, and refuses a page over 97 % of that
            // share. quick_cache's default, four shards a core (up to 512), would refuse a
            // 1,000-row page on a large machine; four keep the largest pages cacheable (8 MiB
            // each at the default bound), and the service runs on one or two cores, so the
            // shards' locks are not contended.
            let options = quick_cache::OptionsBuilder::new()
                .shards(SHARDS)
                .estimated_items_capacity(usize::try_from(most).unwrap_or(usize::MAX))
                .weight_capacity(config.max_bytes)
                .build()
                .expect("both capacities are set");
            let evictions = Evictions {
                metrics: metrics.clone(),
                ttl: config.ttl,
            };
            Arc::new(Cache::with_options(
                options,
                Weigh { floor },
                Default::default(),
                evictions,
            ))
        });
        Self {
            store,
            cache,
            ttl: config.ttl,
            generations: Arc::new(Generations::new()),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            queue_timeout: config.queue_timeout,
            metrics,
            db_system,
        }
    }

    /// The page for `filter`: from the cache while fresh, else from the store (once for all
    /// concurrent identical requests).
    pub async fn get(&self, filter: &RecordFilter) -> Result<Arc<Page>, DependencyError> {
        let Some(cache) = &self.cache else {
            return self.compute(filter).await.map(Arc::new);
        };
        let key = PageKey {
            filter: filter.key(),
            generation: self.generations.of(filter.customer_id.as_deref()),
        };
        // The hit path: a fresh page under a shard's read lock.
        match cache.get(&key) {
            Some(Ok(page)) if page.fresh(Instant::now(), self.ttl) => {
                return self.metrics.answered(Lookup::Hit, Ok(page));
            }
            Some(Ok(stale)) => {
                // Past the TTL: never served. Removed unless another request already has
                // (or has put a newer page there, which the lookup below finds).
                let gone = cache.remove_if(&key, |a| matches!(a, Ok(p) if Arc::ptr_eq(p, &stale)));
                if gone.is_some() {
                    self.metrics.evicted_expired.increment(1);
                }
            }
            // Another request's query failed a moment ago: this one shares its error.
            Some(Err(e)) => return self.metrics.answered(Lookup::Coalesced, Err(e)),
            None => {}
        }
        // Wait for the query another request runs for this key (its answer was just made, so
        // it is not checked against the TTL), or run it.
        match cache.get_value_or_guard_async(&key).await {
            Ok(answer) => self.metrics.answered(Lookup::Coalesced, answer),
            Err(guard) => {
                let answer = self.compute(filter).await.map(Arc::new);
                // The waiters take the answer from the placeholder; an error is then removed
                // at once (no await in between), so the next request queries again.
                let _ = guard.insert(answer.clone());
                if answer.is_err() {
                    cache.remove_if(&key, |a| a.is_err());
                }
                self.metrics.size(cache);
                self.metrics.answered(Lookup::Miss, answer)
            }
        }
    }

    /// Every `every`, or every half TTL when that is shorter, drops the pages past the TTL
    /// that no lookup has found and refreshes the size gauges, which otherwise move only on a
    /// miss. Without it a stale page would hold its memory, and its place: the cache evicts
    /// pages read once before pages read again, whether or not those are past the TTL.
    pub fn spawn_upkeep(&self, every: Duration) -> Option<tokio::task::JoinHandle<()>> {
        let cache = self.cache.clone()?;
        let metrics = self.metrics.clone();
        let ttl = self.ttl;
        let every = every.min(ttl / 2).max(Duration::from_millis(10));
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = Instant::now();
                cache.retain(|_, answer| match answer {
                    Ok(page) => {
                        let fresh = page.fresh(now, ttl);
                        if !fresh {
                            metrics.evicted_expired.increment(1);
                        }
                        fresh
                    }
                    // A failed query's error between its insert and its removal: not a page.
                    Err(_) => false,
                });
                metrics.size(&cache);
            }
        }))
    }

    /// A writer that makes the affected pages stale once `inner` has committed rows.
    pub fn invalidating(&self, inner: Arc<dyn RowWriter>) -> Arc<dyn RowWriter> {
        Arc::new(Invalidating {
            inner,
            generations: self.generations.clone(),
        })
    }

    /// Runs the store query, within the in-flight bound, and builds the page.
    async fn compute(&self, filter: &RecordFilter) -> Result<Page, DependencyError> {
        // A burst of distinct misses waits briefly for a slot (a local query takes about a
        // millisecond); only a store that stays busy past the queue timeout sheds. Without the
        // wait, 64 connections asking for random customers had half their reads refused.
        let permit =
            tokio::time::timeout(self.queue_timeout, self.in_flight.clone().acquire_owned()).await;
        let Ok(Ok(_permit)) = permit else {
            self.metrics.rejected.increment(1);
            return Err(DependencyError::new(
                ErrorKind::ResourceExhausted,
                "QUERY_MAX_IN_FLIGHT store queries stayed busy for QUERY_QUEUE_TIMEOUT_MS",
            ));
        };
        let _running = Running::new(&self.metrics.in_flight);
        let span = telemetry::trace_span(|| {
            tracing::info_span!(
                "SELECT records",
                otel.kind = "client",
                db.system.name = self.db_system,
                db.operation.name = "query",
                db.collection.name = "records",
            )
        });
        let rows = self.store.query_json(filter).instrument(span).await?;
        Ok(page(filter, rows))
    }
}

/// The page of `filter` from the store's encoded rows: its link and its validator.
fn page(filter: &RecordFilter, rows: JsonPage) -> Page {
    let link = rows.next.and_then(|cursor| {
        let link = format!(
            "<{}?{}>; rel=\"next\"",
            crate::http::GET_DATA,
            filter.next_page_query(&cursor)
        );
        HeaderValue::from_str(&link).ok()
    });
    // Copied to a block of its own length: the encoders grow their `Vec` ahead of what they
    // write (the store's by 256 bytes a row, serde_json's by doubling), and `Bytes::from` would
    // keep that whole allocation for as long as the page is cached, while the cache's byte
    // bound weighs only the body. Shrinking in place does not help: mimalloc keeps a block
    // that is at least half used. With the bound full (a k6 50/50 mix over 10,000 customers),
    // the copy took the service's peak RSS from 107.6 to 83.1 MiB (docs/benchmarks.md).
    let body = Bytes::copy_from_slice(&rows.body);
    // A validator needs no cryptographic hash: a client only ever sends back a tag it was given
    // for the same URL, so what matters is that two versions of a page differ in it, which 128
    // bits of XXH3 give as well as SHA-256 did, at a fraction of its cost (SHA-256 was 2 % of
    // by-customer CPU, docs/benchmarks.md). The body ends in `]` and a link starts with `<`, so
    // body and link cannot shift into each other.
    let mut digest = xxhash_rust::xxh3::Xxh3::new();
    digest.update(&body);
    if let Some(link) = &link {
        digest.update(link.as_bytes());
    }
    let etag = format!("\"{:032x}\"", digest.digest128());
    Page {
        body,
        link,
        etag: HeaderValue::from_str(&etag).expect("hex is a valid header value"),
        made: Instant::now(),
    }
}

/// The cache's weight of an entry (see `Pages::new`).
#[derive(Clone)]
struct Weigh {
    floor: u64,
}

impl Weighter<PageKey, Answer> for Weigh {
    fn weight(&self, _: &PageKey, answer: &Answer) -> u64 {
        match answer {
            Ok(page) => (page.body.len() as u64 + ENTRY_OVERHEAD).max(self.floor),
            // Weightless, so that a failed query never pushes a page out; it is removed right
            // after its waiters have it (and by the upkeep, should it not be).
            Err(_) => 0,
        }
    }
}

/// Counts the pages the cache evicts to stay within its bounds: `size`, or `expired` for a
/// page that was already past the TTL (it went because nobody asked for it again).
#[derive(Clone)]
struct Evictions {
    metrics: Arc<PageMetrics>,
    ttl: Duration,
}

impl Lifecycle<PageKey, Answer> for Evictions {
    type RequestState = ();

    fn on_evict(&self, _: &mut (), _: PageKey, answer: Answer) {
        // Errors weigh nothing, and weightless entries are never evicted.
        if answer.is_ok_and(|page| !page.fresh(Instant::now(), self.ttl)) {
            self.metrics.evicted_expired.increment(1);
        } else {
            self.metrics.evicted_size.increment(1);
        }
    }
}

/// Commit counters: one for all rows, one per customer bucket.
struct Generations {
    all: AtomicU64,
    customers: Box<[AtomicU64]>,
}

impl Generations {
    fn new() -> Self {
        Self {
            all: AtomicU64::new(0),
            customers: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn bucket(customer: &str) -> usize {
        let mut h = DefaultHasher::new();
        customer.hash(&mut h);
        (h.finish() as usize) % BUCKETS
    }

    /// The generation a page of `customer` (or of everyone) depends on.
    fn of(&self, customer: Option<&str>) -> u64 {
        match customer {
            None => self.all.load(Ordering::Acquire),
            Some(c) => self.customers[Self::bucket(c)].load(Ordering::Acquire),
        }
    }

    /// Rows were committed: the pages that could show them are stale.
    fn bump(&self, rows: &[Row]) {
        for row in rows {
            self.customers[Self::bucket(&row.record.customer_id)].fetch_add(1, Ordering::AcqRel);
        }
        self.all.fetch_add(1, Ordering::AcqRel);
    }
}

struct Invalidating {
    inner: Arc<dyn RowWriter>,
    generations: Arc<Generations>,
}

#[async_trait]
impl RowWriter for Invalidating {
    async fn insert(&self, rows: &[Row]) -> Result<(), DependencyError> {
        self.inner.insert(rows).await?;
        // After the commit: a query that started before it was keyed under the old
        // generation, so its page can never be served for a later request.
        if !rows.is_empty() {
            self.generations.bump(rows);
        }
        Ok(())
    }
}

/// `result` label values of the lookups counter.
#[derive(Debug, Clone, Copy)]
enum Lookup {
    Hit,
    Miss,
    Coalesced,
}

/// The read path's metric handles, registered once when it is built.
struct PageMetrics {
    hit: Counter,
    miss: Counter,
    coalesced: Counter,
    age: Histogram,
    evicted_size: Counter,
    evicted_expired: Counter,
    entries: Gauge,
    bytes: Gauge,
    in_flight: Gauge,
    rejected: Counter,
}

impl PageMetrics {
    fn register(config: PagesConfig) -> Self {
        let lookups =
            |result: &'static str| metrics::counter!(names::CACHE_LOOKUPS, "result" => result);
        let evictions =
            |reason: &'static str| metrics::counter!(names::CACHE_EVICTIONS, "reason" => reason);
        metrics::gauge!(names::QUERY_MAX_IN_FLIGHT).set(config.max_in_flight as f64);
        metrics::gauge!(names::CACHE_TTL).set(config.ttl.as_secs_f64());
        let m = Self {
            hit: lookups("hit"),
            miss: lookups("miss"),
            coalesced: lookups("coalesced"),
            age: metrics::histogram!(names::CACHE_AGE),
            evicted_size: evictions("size"),
            evicted_expired: evictions("expired"),
            entries: metrics::gauge!(names::CACHE_ENTRIES),
            bytes: metrics::gauge!(names::CACHE_BYTES),
            in_flight: metrics::gauge!(names::QUERY_IN_FLIGHT),
            rejected: metrics::counter!(names::QUERY_REJECTED),
        };
        // Every series from the start, on Prometheus and OTLP alike: "no evictions" reads 0,
        // not absent, and rate() has a first sample.
        for c in [
            &m.hit,
            &m.miss,
            &m.coalesced,
            &m.evicted_size,
            &m.evicted_expired,
            &m.rejected,
        ] {
            c.increment(0);
        }
        m
    }

    fn lookup(&self, lookup: Lookup) {
        match lookup {
            Lookup::Hit => &self.hit,
            Lookup::Miss => &self.miss,
            Lookup::Coalesced => &self.coalesced,
        }
        .increment(1);
    }

    /// A lookup ended with `answer`: count it and, for a page it did not just compute, the
    /// page's age.
    fn answered(&self, lookup: Lookup, answer: Answer) -> Result<Arc<Page>, DependencyError> {
        self.lookup(lookup);
        if let (Ok(page), false) = (&answer, matches!(lookup, Lookup::Miss)) {
            self.age.record(page.made.elapsed().as_secs_f64());
        }
        answer
    }

    fn size(&self, cache: &PageCache) {
        self.entries.set(cache.len() as f64);
        self.bytes.set(cache.weight() as f64);
    }
}

/// Counts one running store query for as long as it lives (also when its future is dropped).
struct Running<'a>(&'a Gauge);

impl<'a> Running<'a> {
    fn new(gauge: &'a Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Whether `if_none_match` (an `If-None-Match` header value) matches `etag`, by the weak
/// comparison RFC 9110 prescribes for it: `*`, or any listed tag equal to ours with or without
/// `W/`.
pub fn matches(if_none_match: &[u8], etag: &HeaderValue) -> bool {
    let Ok(list) = std::str::from_utf8(if_none_match) else {
        return false;
    };
    let ours = etag.as_bytes();
    list.split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag).as_bytes() == ours)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::local::LocalStore;
    use crate::domain::{Order, StoredRecord};
    use proptest::prelude::*;

    const CUSTOMERS: [&str; 3] = ["ana", "bea", "caro"];
    /// 2026-11-28T12:00:00Z in microseconds: the tests' "now".
    const NOW_US: i64 = 1_795_867_200_000_000;

    fn now(offset_us: i64) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp_micros(NOW_US + offset_us).unwrap()
    }

    fn config(ttl: Duration) -> PagesConfig {
        PagesConfig {
            ttl,
            max_bytes: 1 << 20,
            max_entries: 64,
            max_in_flight: 8,
            queue_timeout: Duration::from_millis(100),
        }
    }

    fn row(seq: u64, customer: &str, age_s: i64) -> Row {
        Row {
            record: StoredRecord {
                customer_id: customer.to_owned(),
                name: format!("n{seq}"),
                orders: vec![Order {
                    order_id: seq.to_string(),
                    total: 1.5,
                }],
                revenue: Some(seq as f64),
                message_id: seq.to_string(),
                publish_time_us: NOW_US - age_s * 1_000_000,
            },
            subscription_name: "s".into(),
            attributes_json: "{}".into(),
        }
    }

    /// What the page for `filter` must be: the store's records now, decoded and serialized
    /// again (so the store's direct encoding is checked against serde's too).
    async fn expected(store: &LocalStore, filter: &RecordFilter) -> Page {
        let records = store.query(filter).await.unwrap();
        page(filter, JsonPage::from_records(filter, records))
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Commit `n` rows of one customer, `age_s` seconds old.
        Insert { customer: usize, n: u64, age_s: i64 },
        /// Read a page: limit, customer, which window, and the request clock's offset.
        Read {
            limit: u32,
            customer: Option<usize>,
            window: usize,
            clock_us: i64,
        },
    }

    /// Windows that differ from each other in which rows they hold: the default one, an
    /// explicit `from`, an explicit `to` (so `from` is derived), and both given.
    const WINDOWS: [&str; 4] = [
        "",
        "&from=2026-11-28T11:00:00Z",
        "&to=2026-11-28T11:59:00Z",
        "&from=2026-11-28T11:58:00Z&to=2026-11-28T11:59:30Z",
    ];

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..CUSTOMERS.len(), 1..4u64, 0..7200i64).prop_map(|(customer, n, age_s)| Op::Insert {
                customer,
                n,
                age_s
            }),
            (
                1..5u32,
                proptest::option::of(0..CUSTOMERS.len()),
                0..WINDOWS.len(),
                0..3_000_000i64
            )
                .prop_map(|(limit, customer, window, clock_us)| Op::Read {
                    limit,
                    customer,
                    window,
                    clock_us
                }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Random commits and reads against the real embedded store: every page served, from
        /// the cache or not, is the one the store gives for that very filter at that moment.
        #[test]
        fn a_page_is_never_served_for_a_filter_it_was_not_computed_for(
            ops in proptest::collection::vec(op(), 1..40)
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let store = Arc::new(LocalStore::open(&dir.path().join("store.db")).unwrap());
                let pages = Pages::new(store.clone(), config(Duration::from_secs(600)), "sqlite");
                let writer = pages.invalidating(store.clone());
                let mut seq = 0;
                for op in ops {
                    match op {
                        Op::Insert { customer, n, age_s } => {
                            let rows: Vec<Row> = (0..n)
                                .map(|_| { seq += 1; row(seq, CUSTOMERS[customer], age_s) })
                                .collect();
                            writer.insert(&rows).await.unwrap();
                        }
                        Op::Read { limit, customer, window, clock_us } => {
                            let customer = customer
                                .map(|c| format!("&customerId={}", CUSTOMERS[c]))
                                .unwrap_or_default();
                            let query = format!("limit={limit}{customer}{}", WINDOWS[window]);
                            let filter = RecordFilter::parse(Some(&query), now(clock_us)).unwrap();
                            let served = pages.get(&filter).await.unwrap();
                            let want = expected(&store, &filter).await;
                            prop_assert_eq!(&served.body, &want.body, "{}", query);
                            prop_assert_eq!(served.link.is_some(), want.link.is_some(), "{}", query);
                            // A page of a moving window carries the window it was computed
                            // over in its link (the body and the next page agree); a fixed
                            // window's link is exactly the store's.
                            if filter.moving == Default::default() {
                                prop_assert_eq!(&served.link, &want.link, "{}", query);
                            }
                        }
                    }
                }
                Ok(())
            })?;
        }
    }

    #[tokio::test]
    async fn rows_written_behind_the_cache_show_once_the_ttl_has_passed() {
        // The gcp shape: the BigQuery subscription writes, this process only reads.
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::open(&dir.path().join("store.db")).unwrap());
        let ttl = Duration::from_millis(300);
        let pages = Pages::new(store.clone(), config(ttl), "sqlite");
        let filter = RecordFilter::parse(Some("limit=5"), now(0)).unwrap();
        assert_eq!(&pages.get(&filter).await.unwrap().body[..], b"[]");

        store.insert(&[row(1, "ana", 10)]).await.unwrap();
        let cached = pages.get(&filter).await.unwrap();
        assert_eq!(
            &cached.body[..],
            b"[]",
            "within the TTL the cached page stands"
        );

        tokio::time::sleep(ttl + Duration::from_millis(100)).await;
        let fresh = pages.get(&filter).await.unwrap();
        assert!(fresh.body.len() > 2, "past the TTL the row shows");
        assert_ne!(fresh.etag, cached.etag);
    }

    #[tokio::test]
    async fn a_commit_through_the_invalidating_writer_shows_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::open(&dir.path().join("store.db")).unwrap());
        let pages = Pages::new(store.clone(), config(Duration::from_secs(600)), "sqlite");
        let writer = pages.invalidating(store.clone());
        let ana = RecordFilter::parse(Some("customerId=ana"), now(0)).unwrap();
        let bea = RecordFilter::parse(Some("customerId=bea"), now(0)).unwrap();
        let bea_page = pages.get(&bea).await.unwrap();
        assert_eq!(&pages.get(&ana).await.unwrap().body[..], b"[]");

        writer.insert(&[row(1, "ana", 10)]).await.unwrap();

        assert!(pages.get(&ana).await.unwrap().body.len() > 2);
        // Another customer's page (in another bucket) is still the cached one.
        if Generations::bucket("ana") != Generations::bucket("bea") {
            assert!(Arc::ptr_eq(&pages.get(&bea).await.unwrap(), &bea_page));
        }
    }

    #[tokio::test]
    async fn a_bound_of_one_entry_still_caches_that_one_page() {
        // Each entry weighs at least max_bytes / max_entries: with one entry, all the bytes,
        // which quick_cache would refuse as over 97 % of its capacity had the floor not been
        // capped.
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::open(&dir.path().join("store.db")).unwrap());
        let one = PagesConfig {
            max_entries: 1,
            ..config(Duration::from_secs(600))
        };
        let pages = Pages::new(store, one, "sqlite");
        let ana = RecordFilter::parse(Some("customerId=ana"), now(0)).unwrap();
        let bea = RecordFilter::parse(Some("customerId=bea"), now(0)).unwrap();
        let first = pages.get(&ana).await.unwrap();
        assert!(
            Arc::ptr_eq(&pages.get(&ana).await.unwrap(), &first),
            "cached"
        );
        pages.get(&bea).await.unwrap();
        assert_eq!(pages.cache.as_ref().unwrap().len(), 1, "one place");
    }

    #[test]
    fn if_none_match_compares_weakly_and_accepts_lists_and_star() {
        let etag = HeaderValue::from_static("\"abc\"");
        assert!(matches(b"\"abc\"", &etag));
        assert!(matches(b"W/\"abc\"", &etag));
        assert!(matches(b"\"x\", \"abc\"", &etag));
        assert!(matches(b"*", &etag));
        assert!(!matches(b"\"abd\"", &etag));
        assert!(!matches(b"abc", &etag));
        assert!(!matches(b"", &etag));
    }

    #[test]
    fn a_page_holds_a_block_of_its_own_length_not_the_encoders_buffer() {
        // The byte bound weighs a page by its body's length. A page that kept its encoder's
        // grown buffer held up to twice that (docs/benchmarks.md, "The page cache's memory").
        let mut body = Vec::with_capacity(64 * 1024);
        body.extend_from_slice(b"[]");
        let buffer = body.as_ptr();
        let filter = RecordFilter::parse(None, now(0)).unwrap();
        let page = page(&filter, JsonPage { body, next: None });
        assert_eq!(&page.body[..], b"[]");
        assert_ne!(
            page.body.as_ptr(),
            buffer,
            "the page kept the 64 KiB encoder buffer"
        );
    }
}

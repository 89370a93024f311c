// k6 load test of challenge-latam-api: every scenario of loadtests/run.sh lives here, chosen
// by the SCENARIO variable, so the traffic mix, the checks and the SLO thresholds are written
// once. Thresholds are the SLOs of /work/shared/CONTRACT.md ("SLOs"), expressed per run:
//   availability   non-5xx answers on the two API routes  >= 99.95 %   (429 counts as good)
//   ingest latency ingest answered under 0.25 s            >= 99 %      -> p(99) < 250 ms
//   query latency  getData answered under 1 s               >= 95 %      -> p(95) < 1000 ms
//   freshness      acknowledged records queryable in 60 s   >= 99 %
// Past capacity (stress, spike) the contract's promise is graceful overload instead: answers
// are 2xx, 429 or 503, every 429/503 carries Retry-After, no other 5xx, and the requests that
// were admitted still meet the latency SLOs.
//
// Environment (all optional): BASE_URL (http://127.0.0.1:8080), API_KEYS (comma-separated
// bearer keys; one per VU in turn), RATE (requests/s of the steady-state scenarios),
// MIX (share of ingest requests, 0..1), BATCH_SHARE (share of ingests sent as a batch of
// BATCH_SIZE records), DURATION, PEAK (stress/spike top rate), MAX_VUS, CUSTOMERS (how many
// customer ids the traffic spreads over), RUN_ID (prefix of every customer id of this run),
// ID_TOKEN (a Cloud Run identity token, sent as X-Serverless-Authorization because
// Authorization carries the API key), RETRIES (how many times an ingest is sent again after a
// 503, a 504 or no answer; default 2).
//
// Ingest behaves as docs/api.md asks of a client: every body goes out with a fresh
// Idempotency-Key, and a 503, a 504 or a lost answer is retried with the same key and the same
// bytes after Retry-After (or a short exponential backoff), so a retry never stores twice.
import http from 'k6/http';
import { check, sleep } from 'k6';
import exec from 'k6/execution';
import { Counter, Rate, Trend } from 'k6/metrics';

const BASE = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/$/, '');
const INGEST = `${BASE}/challenge-latam-api/ingestData`;
const GET_DATA = `${BASE}/challenge-latam-api/getData`;
const KEYS = (__ENV.API_KEYS || '').split(',').filter((k) => k.length > 0);
const SCENARIO = __ENV.SCENARIO || 'smoke';
const RATE = Number(__ENV.RATE || 100);
const MIX = Number(__ENV.MIX === undefined ? 0.5 : __ENV.MIX);
const BATCH_SHARE = Number(__ENV.BATCH_SHARE === undefined ? 0.05 : __ENV.BATCH_SHARE);
const BATCH_SIZE = Number(__ENV.BATCH_SIZE || 20);
const PEAK = Number(__ENV.PEAK || 3000);
const MAX_VUS = Number(__ENV.MAX_VUS || 400);
const CUSTOMERS = Number(__ENV.CUSTOMERS || 1000);
const RUN_ID = __ENV.RUN_ID || `k6-${Date.now().toString(36)}`;
const ID_TOKEN = __ENV.ID_TOKEN || '';
const RETRIES = Number(__ENV.RETRIES === undefined ? 2 : __ENV.RETRIES);
const FRESHNESS_LIMIT_S = 60;

// --- SLI metrics -------------------------------------------------------------------------
const availability = new Rate('availability'); // answer was not a 5xx
const graceful = new Rate('graceful_overload'); // 2xx/4xx, or 429/503 carrying Retry-After
const unexpected5xx = new Counter('unexpected_5xx'); // a 5xx other than 503 (shed/unavailable)
const rejected = new Counter('rejected_429_503'); // overload answers (429 or 503)
const ingestLatency = new Trend('ingest_latency', true); // admitted ingest requests only
const queryLatency = new Trend('query_latency', true); // admitted getData requests only
const freshnessOk = new Rate('freshness_ok'); // acknowledged record queryable within 60 s
const freshnessSeconds = new Trend('freshness_seconds', true);
const acknowledged = new Counter('records_acknowledged');
const retried = new Counter('ingest_retries'); // ingests sent again with the same key

// --- scenarios ---------------------------------------------------------------------------
const DURATION = __ENV.DURATION;
const trafficScenario = (extra) =>
  Object.assign({ exec: 'traffic', preAllocatedVUs: 20, maxVUs: MAX_VUS, gracefulStop: '10s' }, extra);
// A record published once a second and polled until it can be read back: the freshness SLI.
const freshnessScenario = (duration) => ({
  executor: 'constant-arrival-rate',
  exec: 'freshness',
  rate: 1,
  timeUnit: '1s',
  duration,
  preAllocatedVUs: 5,
  maxVUs: 80,
  // A probe waits up to 60 s for its record; let the last ones finish.
  gracefulStop: '65s',
});

const SCENARIOS = {
  // A few requests of every kind: the service answers and every SLO threshold holds.
  smoke: {
    traffic: trafficScenario({
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || 20),
      timeUnit: '1s',
      duration: DURATION || '10s',
      preAllocatedVUs: 5,
    }),
    freshness: freshnessScenario(DURATION || '10s'),
  },
  // The target rate, held: the SLOs as thresholds.
  steady: {
    traffic: trafficScenario({
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION || '2m',
    }),
    freshness: freshnessScenario(DURATION || '2m'),
  },
  // One rate for a short while, for the capacity search (loadtests/capacity.sh).
  capacity: {
    traffic: trafficScenario({
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION || '20s',
      preAllocatedVUs: 50,
    }),
  },
  // Ramps past capacity: overload must be graceful.
  stress: {
    traffic: trafficScenario({
      executor: 'ramping-arrival-rate',
      startRate: Math.max(10, Math.round(PEAK / 20)),
      timeUnit: '1s',
      preAllocatedVUs: 50,
      stages: [
        { target: Math.round(PEAK / 4), duration: '20s' },
        { target: PEAK, duration: DURATION || '60s' },
        { target: PEAK, duration: '20s' },
        { target: Math.round(PEAK / 20), duration: '10s' },
      ],
    }),
  },
  // A sudden burst far over capacity and back: overload is graceful and the service recovers.
  spike: {
    traffic: trafficScenario({
      executor: 'ramping-arrival-rate',
      startRate: RATE,
      timeUnit: '1s',
      preAllocatedVUs: 50,
      stages: [
        { target: RATE, duration: '10s' },
        { target: PEAK, duration: '2s' },
        { target: PEAK, duration: DURATION || '20s' },
        { target: RATE, duration: '2s' },
        { target: RATE, duration: '20s' },
      ],
    }),
    freshness: freshnessScenario('54s'),
  },
  // The steady mix held for the on-call demo's time limit (scripts/demo/demo.py). No freshness
  // probe: during an injected store outage each one would poll getData for 60 s.
  demo: {
    traffic: trafficScenario({
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION || '30m',
    }),
  },
  // The steady mix for minutes (bounded): no drift in latency, errors or memory.
  soak: {
    traffic: trafficScenario({
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION || '10m',
    }),
    freshness: freshnessScenario(DURATION || '10m'),
  },
};

if (!SCENARIOS[SCENARIO]) {
  throw new Error(`unknown SCENARIO ${SCENARIO}; one of ${Object.keys(SCENARIOS).join(', ')}`);
}

// The SLOs as thresholds. A scenario run past capacity cannot hold availability (shed
// requests are 503s by design) so there the overload rules replace it.
const SLO = {
  ingest_latency: ['p(99)<250'],
  query_latency: ['p(95)<1000'],
};
const WITHIN_CAPACITY = {
  availability: ['rate>=0.9995'],
  checks: ['rate>=0.999'],
};
const OVERLOAD = {
  graceful_overload: ['rate==1'],
  unexpected_5xx: ['count==0'],
};
const thresholds = Object.assign(
  {},
  SLO,
  OVERLOAD,
  SCENARIO === 'stress' || SCENARIO === 'spike' ? {} : WITHIN_CAPACITY,
  SCENARIOS[SCENARIO].freshness ? { freshness_ok: ['rate>=0.99'] } : {},
);

export const options = {
  scenarios: SCENARIOS[SCENARIO],
  thresholds,
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max', 'count'],
  discardResponseBodies: false,
  setupTimeout: '30s',
};

// --- traffic -----------------------------------------------------------------------------
function headers(json, idempotencyKey) {
  const h = {};
  if (json) h['Content-Type'] = 'application/json';
  if (idempotencyKey) h['Idempotency-Key'] = idempotencyKey;
  if (KEYS.length > 0) h.Authorization = `Bearer ${KEYS[(exec.vu.idInTest - 1) % KEYS.length]}`;
  if (ID_TOKEN) h['X-Serverless-Authorization'] = `Bearer ${ID_TOKEN}`;
  return h;
}

let sequence = 0;
// A unique record: the order id carries the run, VU and sequence, so no two are equal.
function record(customer) {
  sequence += 1;
  const n = 1 + Math.floor(Math.random() * 3);
  const orders = [];
  let revenue = 0;
  for (let i = 0; i < n; i++) {
    const total = Math.round(Math.random() * 500000) / 100;
    revenue += total;
    orders.push({ orderId: `${RUN_ID}-${exec.vu.idInTest}-${sequence}-${i}`, total });
  }
  return {
    customerId: customer,
    name: `Load Test ${customer}`,
    orders,
    revenue: Math.round(revenue * 100) / 100,
  };
}

function customer() {
  return `${RUN_ID}-c${Math.floor(Math.random() * CUSTOMERS)}`;
}

// Records the SLIs of one answer; returns true when it was admitted (not 429/503).
function observe(res, latencyTrend) {
  const s = res.status;
  availability.add(s > 0 && s < 500);
  const overloaded = s === 429 || s === 503;
  if (overloaded) {
    rejected.add(1);
    graceful.add(Boolean(res.headers['Retry-After']));
  } else {
    graceful.add(s > 0 && s < 500);
  }
  if (s >= 500 && s !== 503) unexpected5xx.add(1);
  if (s === 0) unexpected5xx.add(1); // no answer at all (connection reset or timeout)
  if (!overloaded && s !== 0) latencyTrend.add(res.timings.duration);
  return !overloaded;
}

// Unique per body: run, VU and a counter of this VU's ingests.
let keys = 0;
function idempotencyKey() {
  keys += 1;
  return `${RUN_ID}-${exec.vu.idInTest}-${keys}`;
}

// Seconds before sending again: Retry-After when the answer has one (capped, so a VU is not
// parked for long), else 0.25 s doubling; with jitter, so retries do not arrive in step.
function backoff(res, attempt) {
  const after = Number(res.headers['Retry-After']);
  const base = after > 0 ? Math.min(after, 5) : 0.25 * 2 ** attempt;
  return base * (0.5 + Math.random() / 2);
}

// Posts `body` under one Idempotency-Key, and sends the same bytes with the same key again
// after a 503, a 504 or no answer (RETRIES times at most). Each answer counts in the SLIs.
function ingest(body, route) {
  const payload = JSON.stringify(body);
  const params = { headers: headers(true, idempotencyKey()), tags: { route }, timeout: '10s' };
  let res = http.post(INGEST, payload, params);
  for (let attempt = 0; attempt < RETRIES && [0, 503, 504].includes(res.status); attempt++) {
    observe(res, ingestLatency);
    sleep(backoff(res, attempt));
    retried.add(1);
    res = http.post(INGEST, payload, params);
  }
  if (observe(res, ingestLatency)) {
    const ok = check(res, {
      'ingest answers 200': (r) => r.status === 200,
      'ingest returns one message id per record': (r) =>
        r.status === 200 &&
        (r.json('messageIds') || []).length === (Array.isArray(body) ? body.length : 1),
    });
    if (ok) acknowledged.add(Array.isArray(body) ? body.length : 1);
  }
  return res;
}

function query(params) {
  const res = http.get(`${GET_DATA}?${params}`, {
    headers: headers(false),
    tags: { route: 'getData' },
    timeout: '10s',
  });
  if (observe(res, queryLatency)) {
    check(res, {
      'getData answers 200': (r) => r.status === 200,
      'getData returns a JSON array': (r) => r.status === 200 && Array.isArray(r.json()),
    });
  }
  return res;
}

export function traffic() {
  if (Math.random() < MIX) {
    if (Math.random() < BATCH_SHARE) {
      const batch = [];
      for (let i = 0; i < BATCH_SIZE; i++) batch.push(record(customer()));
      ingest(batch, 'ingestData');
    } else {
      ingest(record(customer()), 'ingestData');
    }
  } else if (Math.random() < 0.5) {
    query('limit=10');
  } else {
    query(`customerId=${encodeURIComponent(customer())}&limit=10`);
  }
}

// Publishes one record under a customer id of its own, then polls getData for that customer
// until the acknowledged message id is there (or 60 s pass).
export function freshness() {
  const id = `${RUN_ID}-fresh-${exec.vu.idInTest}-${exec.scenario.iterationInTest}`;
  const res = ingest(record(id), 'ingestData');
  if (res.status !== 200) return; // not acknowledged: nothing was promised
  const messageId = (res.json('messageIds') || [])[0];
  const started = Date.now();
  for (;;) {
    const q = query(`customerId=${encodeURIComponent(id)}&limit=1`);
    if (q.status === 200 && (q.json() || []).some((r) => r.messageId === messageId)) {
      const seconds = (Date.now() - started) / 1000;
      freshnessSeconds.add(seconds * 1000);
      freshnessOk.add(seconds <= FRESHNESS_LIMIT_S);
      return;
    }
    if ((Date.now() - started) / 1000 > FRESHNESS_LIMIT_S) {
      freshnessOk.add(false);
      return;
    }
    sleep(0.05);
  }
}

// Steady traffic for the screenshots (scripts/screenshots.sh): ingest and getData at a fixed
// arrival rate on 127.0.0.1 only, bounded in time. The error burst is injected from outside
// (PUT /admin/faults), so this script stays a plain, steady client.
import http from 'k6/http';

const BASE = __ENV.BASE_URL;
const DURATION = __ENV.DURATION || '150s';

export const options = {
  scenarios: {
    ingest: { executor: 'constant-arrival-rate', rate: 12, timeUnit: '1s', duration: DURATION,
      preAllocatedVUs: 10, maxVUs: 30, exec: 'ingest' },
    query: { executor: 'constant-arrival-rate', rate: 8, timeUnit: '1s', duration: DURATION,
      preAllocatedVUs: 10, maxVUs: 30, exec: 'query' },
  },
  // 500s are the injected burst; the run is for pictures, not a verdict.
  thresholds: {},
  summaryTrendStats: ['p(50)', 'p(95)', 'p(99)'],
};

const record = (i) => JSON.stringify({
  customerId: `${9854764000 + (i % 50)}`,
  name: 'Ronald Ramos',
  orders: [{ orderId: `${i}`, total: 50.0 }, { orderId: `${i + 1}`, total: 2000.0 }],
  revenue: 2050.0,
});

export function ingest() {
  http.post(`${BASE}/challenge-latam-api/ingestData`, record(__ITER),
    { headers: { 'Content-Type': 'application/json' }, tags: { name: 'ingestData' } });
}

export function query() {
  http.get(`${BASE}/challenge-latam-api/getData?limit=20`, { tags: { name: 'getData' } });
}

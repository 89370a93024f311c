#!/usr/bin/env bash
# Ingest of single records on BACKEND=gcp against the emulators, beside its ceiling measured in
# the same run: examples/publish_ceiling.rs, the service's own Pub/Sub adapter (the official
# google-cloud-pubsub client, same settings) publishing straight to the emulator from as many
# closed loops as wrk has connections, with no HTTP in front. ROUNDS rounds, each running the
# ceiling, the service without the worker (production's shape) and the service with the pull
# worker, in an order that rotates; the summary pairs each service run with its round's
# ceiling. Then getData with the page cache on and off. wrk on 127.0.0.1 only.
#
#   scripts/emulators/bench.sh                       # CONNECTIONS=64 DURATION=15 ROUNDS=3
#   CONNECTIONS=8 DURATION=10 ROUNDS=2 scripts/emulators/bench.sh
#   KEEP=1 ...                                       # keep wrk's outputs and the logs
#
# Why the ceiling and the no-worker service publish to a topic without subscriptions: the
# emulator keeps every message of a subscription nobody acknowledges in its JVM heap, and in
# production the BigQuery subscription, which the emulator cannot run, consumes them. Kept,
# they grew the heap by about 6 KB a message, and the emulator's young collections grew with
# it to pauses of over a second that every publish in flight waited out (docs/benchmarks.md,
# 2026-12-07). The worker case publishes to the provisioned topic, whose subscription the
# worker drains only as fast as bqemulator takes rows; the Pub/Sub emulator is restarted after
# it, so what it left does not weigh on the next case. Printed beside each case: the
# emulator's GC pauses (its GC log), the cores each process and the rest of the machine used,
# the share of requests and of publish calls over 25 ms by the service's own histograms, and,
# when wrk saw errors, the answers that were not 2xx by status (the service's counter) beside
# wrk's socket errors.
#
# The emulators are not Google's production services: the figures measure this service plus
# the Pub/Sub emulator's publish path on a shared 2-core machine, not Pub/Sub.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.tools/venv/bin:$PATH"
scripts/bootstrap.sh # the emulators, bqemulator and wrk, as `make test` installs them
CONNECTIONS="${CONNECTIONS:-64}"
DURATION="${DURATION:-15}"
DURATION="${DURATION%s}"
ROUNDS="${ROUNDS:-3}"

work=$(mktemp -d -t gcp-bench.XXXXXX)
export EMULATOR_DIR="$work/emulators"
SERVICE_PID=""
cleanup() {
  [ -z "$SERVICE_PID" ] || python3 loadtests/lib/service.py stop "$SERVICE_PID" || true
  scripts/emulators.sh stop || true
  if [ -n "${KEEP:-}" ]; then echo "bench: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

key="bench-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
printf '[{"id":"bench","sha256":"%s","scopes":["ingest","read"]}]\n' \
  "$(printf '%s' "$key" | sha256sum | cut -d' ' -f1)" >"$work/keys.json"

scripts/build.sh -q # the service and examples/publish_ceiling, as make test builds them

# The Pub/Sub emulator's GC log, one file per JVM (the worker case restarts it): "file bytes".
export JAVA_OPTS="${JAVA_OPTS:-} -Xlog:gc:file=$work/pubsub-gc.%p.log:uptime"
gc_at() {
  local f
  f="$work/pubsub-gc.$(cat "$EMULATOR_DIR/pubsub.pid" 2>/dev/null).log"
  if [ -f "$f" ]; then echo "$f $(wc -c <"$f")"; else echo "- 0"; fi
}
# Where the two cores went during a case, in clock ticks: the process under test, the Pub/Sub
# emulator, bqemulator, the generator, and the whole machine (everyone else is the rest).
ticks() { if [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ]; then awk '{print $14 + $15}' "/proc/$1/stat"; else echo 0; fi; }
busy() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
emulator_ticks() { echo "$(ticks "$(cat "$EMULATOR_DIR/pubsub.pid" 2>/dev/null)") $(ticks "$(cat "$EMULATOR_DIR/bigquery.pid" 2>/dev/null)")"; }
# Children's CPU of a subshell (bash `times`, second line) in ticks.
child_ticks() { awk -v hz="$(getconf CLK_TCK)" 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } print int(t * hz) }'; }
# label round gc_from gc_to result-file kind wall_s busy proc pubsub bq generator: one line per
# measured case, for the summary.
record() { local IFS=$'\t'; echo "$*" >>"$work/cases.tsv"; }

# One record of one order per request (ORDERS, CUSTOMERS: loadtests/wrk/ingest.lua), the shape
# examples/publish_ceiling.rs publishes; getdata.lua reads neither.
wrk_warm_up() { # $1 = URL, $2.. = wrk script args
  local url=$1
  shift
  AUTH="$key" ORDERS=1 CUSTOMERS=64 wrk -t1 -c"$CONNECTIONS" -d2s "$@" "$url" >/dev/null
}
wrk_run() { # $1 = output file, $2 = URL, $3.. = wrk script args; prints wrk's CPU ticks
  local out=$1 url=$2
  shift 2
  (AUTH="$key" ORDERS=1 CUSTOMERS=64 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency --timeout 10s "$@" "$url" >"$out"; times) | child_ticks
}

run() { # $1 = label, $2 = round, $3 = path, $4 = wrk script or "-"; the service environment follows
  local label=$1 round=$2 path=$3 script=$4 setting started from
  shift 4
  local args=()
  for setting in "$@"; do args+=(--env "$setting"); done
  # The launcher (loadtests/lib/service.py): port 0, ready on /readyz within 20 s.
  started=$(python3 loadtests/lib/service.py start --data-dir "$work/data-$label" --log "$work/$label.log" \
    --ready-timeout 20 "${args[@]}" --env API_KEYS_FILE="$work/keys.json" \
    --env RATE_LIMIT_PER_SECOND=1000000 --env RATE_LIMIT_BURST=1000000 --env RUST_LOG=warn) ||
    { echo "bench: $label did not get ready" >&2; exit 1; }
  eval "$started"
  [ "$script" != - ] || script=loadtests/wrk/getdata.lua
  local out="$work/$label.$round.out" gen b0 b1 p0 p1 e0 e1 t0 t1
  wrk_warm_up "$SERVICE_URL$path" -s "$script"
  # The service's own histograms around the measured run (after the warm-up, so they count
  # what wrk counts): how many requests took over 25 ms inside the handler, how many
  # publishes did, and the answers by status.
  curl -sf "$SERVICE_ADMIN_URL/metrics" >"$out.m0" || true
  from=$(gc_at) b0=$(busy) p0=$(ticks "$SERVICE_PID") e0=$(emulator_ticks) t0=$(date +%s.%N)
  gen=$(wrk_run "$out" "$SERVICE_URL$path" -s "$script")
  b1=$(busy) p1=$(ticks "$SERVICE_PID") e1=$(emulator_ticks) t1=$(date +%s.%N)
  curl -sf "$SERVICE_ADMIN_URL/metrics" >"$out.m1" || true
  record "$label" "$round" "$from" "$(gc_at)" "$out" wrk "$t0 $t1" "$b0 $b1" "$p0 $p1" "$e0 $e1" "$gen"
  python3 loadtests/lib/service.py stop "$SERVICE_PID"
  SERVICE_PID=""
}

ceiling() { # $1 = round; its own 2 s warm-up is inside the wall time and its CPU
  local out="$work/ceiling.$1.out" from proc b0 b1 e0 e1 t0 t1
  from=$(gc_at) b0=$(busy) e0=$(emulator_ticks) t0=$(date +%s.%N)
  proc=$( (PUBSUB_EMULATOR_HOST="$PUBSUB_EMULATOR_HOST" GCP_PROJECT="$GCP_PROJECT" PUBSUB_TOPIC="$bare_topic" \
    target/release/examples/publish_ceiling "$CONNECTIONS" "$DURATION" >"$out"; times) | child_ticks)
  b1=$(busy) e1=$(emulator_ticks) t1=$(date +%s.%N)
  record ceiling "$1" "$from" "$(gc_at)" "$out" ceiling "$t0 $t1" "$b0 $b1" "0 $proc" "$e0 $e1" 0
}

ingest=/challenge-latam-api/ingestData
echo "bench: ingest of one record per request, wrk $CONNECTIONS connections, ${DURATION}s per case, $ROUNDS rounds, on 127.0.0.1"
run local 0 "$ingest" loadtests/wrk/ingest.lua BACKEND=local DATA_DIR="$work/data"
PUBSUB_PORT=0 BQ_PORT=0 BQ_GRPC_PORT=0 scripts/emulators.sh start >"$work/env"
# shellcheck disable=SC1091
source "$work/env"
bare_topic="$PUBSUB_TOPIC-bench"
bare_topic_create() { curl -sf -X PUT "http://$PUBSUB_EMULATOR_HOST/v1/projects/$GCP_PROJECT/topics/$bare_topic" >/dev/null; }
bare_topic_create
gcp=(BACKEND=gcp GCP_PROJECT="$GCP_PROJECT" BQ_DATASET="$BQ_DATASET" BQ_TABLE="$BQ_TABLE" \
  PUBSUB_EMULATOR_HOST="$PUBSUB_EMULATOR_HOST" BIGQUERY_EMULATOR_HOST="$BIGQUERY_EMULATOR_HOST")
# What the worker leaves on its subscription stays in the emulator's heap even once dropped (a
# seek to now): the collections that followed still paused for up to 1.4 s. A fresh emulator
# (provisioned again) is the clean state the other cases need.
fresh_pubsub() {
  scripts/emulators.sh stop-one pubsub 2>/dev/null
  scripts/emulators.sh start-one pubsub 2>/dev/null
  bare_topic_create
  warm_up
}
# The emulator's JIT compiles its publish path in the first seconds of load: unmeasured.
warm_up() {
  PUBSUB_EMULATOR_HOST="$PUBSUB_EMULATOR_HOST" GCP_PROJECT="$GCP_PROJECT" PUBSUB_TOPIC="$bare_topic" \
    target/release/examples/publish_ceiling "$CONNECTIONS" 5 >/dev/null
}
warm_up
cases=(ceiling gcp gcp+worker)
for ((r = 1; r <= ROUNDS; r++)); do
  for ((c = 0; c < ${#cases[@]}; c++)); do
    case "${cases[(c + r - 1) % ${#cases[@]}]}" in
      ceiling) ceiling "$r" ;;
      gcp) run gcp "$r" "$ingest" loadtests/wrk/ingest.lua "${gcp[@]}" PUBSUB_TOPIC="$bare_topic" ;;
      gcp+worker)
        run gcp+worker "$r" "$ingest" loadtests/wrk/ingest.lua "${gcp[@]}" PUBSUB_TOPIC="$PUBSUB_TOPIC" \
          PUBSUB_SUBSCRIPTION="$PUBSUB_SUBSCRIPTION"
        fresh_pubsub
        ;;
    esac
  done
done
echo "bench: getData (default query), wrk $CONNECTIONS connections, ${DURATION}s each, gcp with the page cache on and off"
run gcp-cached 1 /challenge-latam-api/getData - "${gcp[@]}" PUBSUB_TOPIC="$PUBSUB_TOPIC"
run gcp-uncached 1 /challenge-latam-api/getData - "${gcp[@]}" PUBSUB_TOPIC="$PUBSUB_TOPIC" QUERY_CACHE_TTL_MS=0

python3 - "$work/cases.tsv" "$(getconf CLK_TCK)" <<'PY'
import re, statistics, sys
cases_path, hz = sys.argv[1:]
hz = int(hz)

def gc_between(a, b):
    """The emulator's GC log between two `gc_at` marks of the same JVM."""
    (fa, oa), (fb, ob) = a.split(), b.split()
    if fa == "-" or fa != fb:
        return ""
    with open(fa, "rb") as f:
        f.seek(int(oa))
        return f.read(int(ob) - int(oa)).decode(errors="replace")

def ms(s):
    v, u = re.match(r"([\d.]+)(us|ms|s)", s).groups()
    return float(v) / 1000 if u == "us" else float(v) if u == "ms" else float(v) * 1000

def parse(kind, text):
    if kind == "ceiling":
        m = re.search(r"([\d.]+) req/s\s+p50\s+([\d.]+) ms\s+p99\s+([\d.]+) ms\s+errors (\d+)\s+\((\d+)", text)
        return dict(rps=float(m[1]), p50=float(m[2]), p99=float(m[3]), bad=int(m[4]), n=int(m[5]))
    n = int(re.search(r"(\d+) requests in", text)[1])
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return dict(rps=float(re.search(r"Requests/sec:\s+([\d.]+)", text)[1]),
                p50=ms(re.search(r"^\s+50%\s+(\S+)", text, re.M)[1]),
                p99=ms(re.search(r"^\s+99%\s+(\S+)", text, re.M)[1]),
                bad=(int(bad[1]) if bad else 0) + (sum(map(int, errs.groups())) if errs else 0), n=n)

def over_25ms(path, name, match):
    """(count, count over 25 ms) of histogram `name` summed over the series whose labels
    contain `match`, from one scrape."""
    total = under = 0.0
    try:
        text = open(path).read()
    except FileNotFoundError:
        return 0.0, 0.0
    for m in re.finditer(rf"^{name}_(bucket|count)\{{([^}}]*)\}} (\S+)$", text, re.M):
        if match not in m[2]:
            continue
        if m[1] == "count":
            total += float(m[3])
        elif 'le="0.025"' in m[2]:
            under += float(m[3])
    return total, total - under

def answers_by_status(out, route):
    """Answers of `route` by status that were not 2xx, from the service's own request counter
    between the two scrapes: what wrk's single non-2xx count does not say."""
    counts = {}
    for scrape, sign in ((out + ".m1", 1), (out + ".m0", -1)):
        try:
            text = open(scrape).read()
        except FileNotFoundError:
            return {}
        for m in re.finditer(r"^http_server_request_duration_seconds_count\{([^}]*)\} (\S+)$", text, re.M):
            status = re.search(r'http_response_status_code="(\d+)"', m[1])
            if route in m[1] and status and not status[1].startswith("2"):
                counts[status[1]] = counts.get(status[1], 0) + sign * float(m[2])
    return {k: int(v) for k, v in sorted(counts.items()) if v}

def tail_split(out):
    res = []
    for name, match in (("http_server_request_duration_seconds", "ingestData"),
                        ("messaging_client_operation_duration_seconds", 'operation_name="publish"')):
        n0, o0 = over_25ms(out + ".m0", name, match)
        n1, o1 = over_25ms(out + ".m1", name, match)
        res.append((o1 - o0) / (n1 - n0) if n1 > n0 else None)
    return res

rows = []
for line in open(cases_path):
    label, rnd, a, b, path, kind, wall, busy, proc, emu, gen = line.rstrip("\n").split("\t")
    r = parse(kind, open(path).read())
    t0, t1 = map(float, wall.split())
    cores = lambda ticks: ticks / hz / (t1 - t0)
    b0, b1 = map(int, busy.split())
    p0, p1 = map(int, proc.split())
    s0, q0, s1, q1 = map(int, emu.split())
    cpu = dict(proc=cores(p1 - p0), pubsub=cores(s1 - s0), bq=cores(q1 - q0), gen=cores(int(gen)))
    cpu["others"] = max(0.0, cores(b1 - b0) - sum(cpu.values()))
    r["cpu"] = cpu
    r["inside"] = tail_split(path) if kind == "wrk" else [None, None]
    pauses = [float(x) for x in re.findall(r"Pause.* ([\d.]+)ms$", gc_between(a, b), re.M)]
    r.update(label=label, round=int(rnd), gc_n=len(pauses), gc_max=max(pauses, default=0.0),
             gc_sum=sum(pauses))
    rows.append(r)
    print(f"bench: {'R' + rnd if rnd != '0' else 'ref':<3} {label:<13} {r['rps']:9.1f} req/s  p50 {r['p50']:7.2f} ms  p99 {r['p99']:8.2f} ms  "
          f"non-2xx/errors {r['bad']}/{r['n']}  emulator GC pauses {len(pauses)}, max {r['gc_max']:.1f} ms, "
          f"sum {r['gc_sum']:.0f} ms")
    c = r["cpu"]
    print(f"bench:    cores used: {label} {c['proc']:.2f} ({c['proc'] / max(r['rps'], 1) * 1e6:.0f} us a request), "
          f"pubsub emulator {c['pubsub']:.2f}, bqemulator {c['bq']:.2f}, wrk {c['gen']:.2f}, "
          f"everything else on the machine {c['others']:.2f} (of 2)")
    if kind == "wrk" and r["bad"]:
        route = "getData" if "getData" in open(path).read() else "ingestData"
        sock = re.search(r"Socket errors: (.*)", open(path).read())
        print(f"bench:    not 2xx, by status (the service's counter): {answers_by_status(path, route) or 'none'}; "
              f"wrk socket errors: {sock[1] if sock else 'none'}")
    http, pub = r["inside"]
    if http is not None:
        print(f"bench:    over 25 ms: {http:.2%} of requests inside the service (handler and middleware)"
              + (f", {pub:.2%} of publishes (client batching, gRPC, emulator)" if pub is not None else ""))
ceil = {r["round"]: r for r in rows if r["label"] == "ceiling"}
for label in ("gcp", "gcp+worker"):
    runs = [r for r in rows if r["label"] == label and r["round"] in ceil]
    if not runs:
        continue
    shares = [r["rps"] / ceil[r["round"]]["rps"] for r in runs]
    print(f"bench: {label:<10} / ceiling, paired by round: " + ", ".join(f"{s:.1%}" for s in shares)
          + f"; median {statistics.median(shares):.1%}; p99 by round "
          + ", ".join(f"{r['p99']:.1f}" for r in runs) + " ms (target: >= 50 %, p99 < 25 ms)")
PY

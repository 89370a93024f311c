"""The one launcher of the release binary: start it on port 0, read the ports it bound from
its `listening` log line, wait for /readyz, stop it by its PID. Used by the load tests, the
benchmark, the drills (scripts/drills/), the dashboards check and, through the command line
below, every shell script that runs the service. Standard library only (the Prometheus text
helpers at the end import prometheus_client when called).

    eval "$(python3 loadtests/lib/service.py start --data-dir DIR [--keys N] [--env K=V ...])"
        prints SERVICE_PID, SERVICE_URL, SERVICE_ADMIN_URL, SERVICE_LOG (and SERVICE_KEY,
        SERVICE_KEYS, with --keys) as shell assignments; the service keeps running.
        Capture it first (`started=$(...)`, then `eval "$started"`): `eval "$(...)"` alone
        hides a failed start from `set -e`.
    python3 loadtests/lib/service.py stop PID     SIGTERM, SIGKILL after --timeout seconds
    python3 loadtests/lib/service.py free-port    a free loopback port, for tools that cannot
                                                  report a port 0 choice (Prometheus, emulators)

Everything here talks to 127.0.0.1 only and stops only the processes it started, by PID.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("SERVICE_BIN", ROOT / "target/release/challenge-latam-api"))
INGEST = "/challenge-latam-api/ingestData"
GET_DATA = "/challenge-latam-api/getData"


# The log filter directive that keeps the `listening` line at any RUST_LOG (src/main.rs).
LISTENING_DIRECTIVE = "challenge_latam_api::listening=info"
_PRETTY_LISTENING = re.compile(r"\blistening\b.*?\bport=(\d+).*?\badmin_port=(\d+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def free_port() -> int:
    """A port free on 127.0.0.1 right now, for a tool that cannot report a port 0 choice (the
    service can: `Service` reads it from its log)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_ports(line: str) -> tuple[int, int] | None:
    """(port, admin_port) from the service's `listening` log line, LOG_FORMAT=json or pretty;
    None for any other line."""
    try:
        v = json.loads(line)
    except ValueError:
        m = _PRETTY_LISTENING.search(_ANSI.sub("", line))
        return (int(m[1]), int(m[2])) if m else None
    if isinstance(v, dict) and v.get("message") == "listening":
        return int(v["port"]), int(v["admin_port"])
    return None


def make_keys(directory: Path, n: int = 4, client: str = "loadtest") -> tuple[Path, list[str]]:
    """Writes an API_KEYS_FILE of `n` clients with both scopes; returns it and the keys."""
    keys = [secrets.token_urlsafe(24) for _ in range(n)]
    entries = [
        {
            "id": f"{client}-{i}",
            "sha256": hashlib.sha256(k.encode()).hexdigest(),
            "scopes": ["ingest", "read"],
        }
        for i, k in enumerate(keys)
    ]
    path = directory / "api-keys.json"
    path.write_text(json.dumps(entries))
    return path, keys


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 10.0) -> tuple[int, dict, bytes]:
    """One request; returns (status, headers, body); status 0 when there was no answer."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0, {}, b""


def pinned(cpus: str | None, cmd: list[str]) -> list[str]:
    """`cmd` limited to `cpus` (`taskset -c` syntax, e.g. "0"), or unchanged for None. taskset
    execs the command, so a process started this way keeps its own pid."""
    return (["taskset", "-c", cpus] if cpus else []) + cmd


class Service:
    """One run of the release binary: `start()`, use `url`/`admin_url`, `stop()`.

    It listens on port 0 unless `env` says otherwise; `port` and `admin_port` are the ports
    it bound, read from its `listening` log line at each start (None before the first)."""

    def __init__(self, data_dir: Path | None = None, env: dict | None = None,
                 log: Path | None = None, binary: Path = BINARY, cpus: str | None = None,
                 wrap: list[str] | None = None):
        self.binary = Path(binary)
        # A command the binary runs under (valgrind); it must keep the binary's pid.
        self.wrap = list(wrap or [])
        # CPUs the process may run on (`taskset -c` syntax, e.g. "0"); None: any.
        self.cpus = cpus
        self._tmp = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="latam-svc-")
            data_dir = Path(self._tmp.name)
        self.data_dir = Path(data_dir)
        self.port: int | None = None
        self.admin_port: int | None = None
        self.env = dict(env or {})
        self.log = Path(log) if log else self.data_dir / "service.log"
        self.proc: subprocess.Popen | None = None
        self._log_file = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self, wait_ready: float = 30.0, reuse_ports: bool = True) -> "Service":
        """Starts the process and waits up to `wait_ready` seconds for its ports (and, unless
        `wait_ready` is 0, for /readyz; then its ports within 30 s). A restart keeps the ports
        of the run before unless `reuse_ports` is False (then port 0 again)."""
        if not self.binary.exists():
            raise SystemExit(f"{self.binary} is missing: build it with "
                             "`scripts/build.sh`")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "BACKEND": "local",
            "HOST": "127.0.0.1",
            "PORT": "0",
            "ADMIN_PORT": "0",
            "DATA_DIR": str(self.data_dir),
            "LOG_FORMAT": "json",
        }
        # The service's own log level (info: a line per request) unless SERVICE_RUST_LOG says
        # otherwise: the benchmark measures the service as deployed.
        if os.environ.get("SERVICE_RUST_LOG"):
            env["RUST_LOG"] = os.environ["SERVICE_RUST_LOG"]
        env.update({k: str(v) for k, v in self.env.items()})
        if env.get("RUST_LOG"):
            # Whatever level was asked for, the line with the ports stays.
            env["RUST_LOG"] += "," + LISTENING_DIRECTIVE
        if reuse_ports and self.port is not None:
            env["PORT"], env["ADMIN_PORT"] = str(self.port), str(self.admin_port)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        offset = self.log.stat().st_size if self.log.exists() else 0
        self._log_file = open(self.log, "ab")
        self.proc = subprocess.Popen(pinned(self.cpus, [*self.wrap, str(self.binary)]), env=env,
                                     stdout=self._log_file,
                                     stderr=subprocess.STDOUT)
        self._wait_listening(offset, wait_ready or 30.0)
        if wait_ready:
            self.wait_ready(wait_ready)
        return self

    def _wait_listening(self, offset: int, timeout: float) -> None:
        """Reads the log from `offset` (this run's part) until the `listening` line."""
        deadline = time.monotonic() + timeout
        with open(self.log, "rb") as f:
            f.seek(offset)
            pending = b""
            while True:
                chunk = f.read()
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    ports = listening_ports(line.decode(errors="replace"))
                    if ports:
                        self.port, self.admin_port = ports
                        return
                if self.proc.poll() is not None:
                    raise RuntimeError(f"service exited with {self.proc.returncode} at start; "
                                       f"log: {self.log}\n{self.tail()}")
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"service logged no `listening` line within {timeout} s; "
                                       f"log: {self.log}\n{self.tail()}")
                if not chunk:
                    time.sleep(0.02)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"service exited with {self.proc.returncode} at start; "
                                   f"log: {self.log}\n{self.tail()}")
            status, _, _ = http("GET", f"{self.url}/readyz", timeout=2)
            if status == 200:
                return
            time.sleep(0.1)
        raise RuntimeError(f"service not ready after {timeout} s; log: {self.log}\n{self.tail()}")

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float) -> int | None:
        """Exit code, or None when still running after `timeout` seconds."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if not self.proc:
            return None
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            if self.wait(timeout) is None:
                self.signal(signal.SIGKILL)
                self.wait(5)
        if self._log_file:
            self._log_file.close()
            self._log_file = None
        return self.proc.returncode

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(5)
        if self._log_file:
            self._log_file.close()
            self._log_file = None

    def rss_bytes(self) -> int:
        """Resident memory of the process now, from /proc (0 when gone)."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def metrics(self) -> str:
        status, _, body = http("GET", f"{self.admin_url}/metrics", timeout=5)
        return body.decode() if status == 200 else ""

    def cleanup(self) -> None:
        if self._tmp:
            self._tmp.cleanup()


class RssSampler(threading.Thread):
    """Samples a process's resident memory every `period` seconds; `max` is the peak."""

    def __init__(self, pid: int, period: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.samples: list[int] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.samples.append(int(line.split()[1]) * 1024)
            except OSError:
                return
            self._halt.wait(self.period)

    def stop(self) -> int:
        self._halt.set()
        self.join(2)
        return max(self.samples, default=0)


def samples(metrics_text: str, name: str) -> list[tuple[dict, float]]:
    """Every sample called `name` (a histogram's `_bucket`, `_count` or `_sum` too) in a
    Prometheus exposition, as (labels, value), read with prometheus_client's parser."""
    from prometheus_client.parser import text_string_to_metric_families
    return [(s.labels, s.value) for family in text_string_to_metric_families(metrics_text)
            for s in family.samples if s.name == name]


def histogram(metrics_text: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts {le: count} of an unlabelled histogram (le=+Inf as inf)."""
    return {float(labels["le"]): value for labels, value in samples(metrics_text, f"{name}_bucket")}


def quantile_upper_bound(buckets: dict[float, float], q: float) -> float:
    """The smallest bucket boundary that holds at least `q` of the observations."""
    if not buckets:
        return float("nan")
    total = buckets[max(buckets)]
    if total == 0:
        return float("nan")
    for le in sorted(buckets):
        if buckets[le] >= q * total:
            return le
    return float("inf")


def _stop_pid(pid: int, timeout: float) -> None:
    """SIGTERM `pid`, SIGKILL after `timeout` s; returns once it is gone (or a zombie, left
    for its new parent to reap: a started service outlives the command that started it)."""
    def alive() -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state != "Z"

    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        if not alive():
            return
        os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while alive() and time.monotonic() < deadline:
            time.sleep(0.05)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="service.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start the service; print shell assignments")
    start.add_argument("--data-dir", required=True, type=Path, help="its DATA_DIR (kept)")
    start.add_argument("--log", type=Path, help="its stdout and stderr (DATA_DIR/service.log)")
    start.add_argument("--binary", type=Path, default=BINARY)
    start.add_argument("--env", action="append", default=[], metavar="K=V",
                       help="a setting (repeat); PORT and ADMIN_PORT are 0 unless given")
    start.add_argument("--keys", type=int, default=0, metavar="N",
                       help="write an API_KEYS_FILE of N keys with both scopes into DATA_DIR")
    start.add_argument("--client", default="loadtest", help="the keys' client id prefix")
    start.add_argument("--ready-timeout", type=float, default=30.0,
                       help="seconds to wait for /readyz (0: only for the ports)")
    stop = sub.add_parser("stop", help="stop a service this command started, by its PID")
    stop.add_argument("pid", type=int)
    stop.add_argument("--timeout", type=float, default=15.0, help="seconds before SIGKILL")
    sub.add_parser("free-port", help="print a port free on 127.0.0.1 now")
    args = ap.parse_args(argv)

    if args.command == "free-port":
        print(free_port())
        return 0
    if args.command == "stop":
        _stop_pid(args.pid, args.timeout)
        return 0
    env = dict(kv.split("=", 1) for kv in args.env)
    out = {}
    if args.keys:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        path, keys = make_keys(args.data_dir, args.keys, args.client)
        env["API_KEYS_FILE"] = str(path)
        out.update(SERVICE_KEY=keys[0], SERVICE_KEYS=",".join(keys))
    service = Service(data_dir=args.data_dir, env=env, log=args.log, binary=args.binary)
    try:
        service.start(wait_ready=args.ready_timeout)
    except RuntimeError as e:
        service.kill()
        print(f"service.py: {e}", file=sys.stderr)
        return 1
    out.update(SERVICE_PID=service.pid, SERVICE_URL=service.url,
               SERVICE_ADMIN_URL=service.admin_url, SERVICE_LOG=service.log)
    for k, v in out.items():
        print(f"{k}={shlex.quote(str(v))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Start, watch and stop the release binary on the embedded default, for the load tests,
the benchmark and the reliability drills (scripts/drills/). Standard library only.

Everything here talks to 127.0.0.1 only and stops only the processes it started, by PID.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
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


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the service cannot report a port 0 choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_keys(directory: Path, n: int = 4) -> tuple[Path, list[str]]:
    """Writes an API_KEYS_FILE of `n` clients with both scopes; returns it and the keys."""
    keys = [secrets.token_urlsafe(24) for _ in range(n)]
    entries = [
        {
            "id": f"loadtest-{i}",
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
    """One run of the release binary: `start()`, use `url`/`admin_url`, `stop()`."""

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
        self.port = free_port()
        self.admin_port = free_port()
        self.env = dict(env or {})
        self.log = log or (self.data_dir / "service.log")
        self.proc: subprocess.Popen | None = None
        self._log_file = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self, wait_ready: float = 30.0, reuse_ports: bool = True) -> "Service":
        if not self.binary.exists():
            raise SystemExit(f"{self.binary} is missing: build it with "
                             "`scripts/build.sh`")
        if not reuse_ports:
            self.port, self.admin_port = free_port(), free_port()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "BACKEND": "local",
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "ADMIN_PORT": str(self.admin_port),
            "DATA_DIR": str(self.data_dir),
            "LOG_FORMAT": "json",
        }
        # The service's own log level (info: a line per request) unless SERVICE_RUST_LOG says
        # otherwise: the benchmark measures the service as deployed.
        if os.environ.get("SERVICE_RUST_LOG"):
            env["RUST_LOG"] = os.environ["SERVICE_RUST_LOG"]
        env.update(self.env)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log, "ab")
        self.proc = subprocess.Popen(pinned(self.cpus, [*self.wrap, str(self.binary)]), env=env,
                                     stdout=self._log_file,
                                     stderr=subprocess.STDOUT)
        if wait_ready:
            self.wait_ready(wait_ready)
        return self

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

#!/usr/bin/env python3
"""Two ways Google's Pub/Sub emulator differs from Pub/Sub, each shown in a few calls against
the emulator's own API (docs/gcp.md tells what the worker does about them).

    eval "$(scripts/emulators.sh start)"          # or any emulator: PUBSUB_EMULATOR_HOST=h:p
    .tools/venv/bin/python scripts/emulators/pubsub_repro.py ghost
    .tools/venv/bin/python scripts/emulators/pubsub_repro.py flow-control
    python3 scripts/emulators/pubsub_repro.py redelivery

ghost         a StreamingPull client is SIGKILLed; messages published afterwards are taken by
              its stream, which the emulator never closes, and a REST pull that polls all the
              while gets almost none of them (they come back only as their 10 s leases lapse,
              and go to the dead stream again). Pub/Sub ends a stream whose connection closed.
flow-control  a StreamingPull that asks for at most 10 outstanding messages (gRPC, the
              request encoded by hand: no generated code) receives the whole backlog; Pub/Sub
              stops at 10 until some are acknowledged.
redelivery    with a retry policy (and a dead-letter policy, which makes the emulator count
              attempts), one late acknowledgement of a message whose lease had expired stops
              every later backoff redelivery on that subscription: a nacked message never
              comes back. Pub/Sub redelivers it after the retry policy's backoff.

Standard library only (plus grpcio from .tools/venv for ghost and flow-control); it creates its own
topic and subscriptions, with a random suffix, and prints what it saw. Exit 0 when the
difference showed, 1 when the emulator behaved like Pub/Sub.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
import time
import urllib.request

HOST = os.environ.get("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085")
PROJECT = os.environ.get("GCP_PROJECT", "test-project")
BASE = f"http://{HOST}/v1/projects/{PROJECT}"
RUN = secrets.token_hex(3)


def call(method: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(f"{BASE}/{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"{}")


def setup(retry: bool) -> tuple[str, str]:
    topic, sub, dead = f"repro-{RUN}", f"repro-{RUN}-{'retry' if retry else 'plain'}", f"repro-{RUN}-dead"
    for t in (topic, dead):
        try:
            call("PUT", f"topics/{t}")
        except urllib.error.HTTPError as e:
            if e.code != 409:
                raise
    config = {"topic": f"projects/{PROJECT}/topics/{topic}", "ackDeadlineSeconds": 10}
    if retry:
        config["deadLetterPolicy"] = {"deadLetterTopic": f"projects/{PROJECT}/topics/{dead}",
                                      "maxDeliveryAttempts": 5}
        config["retryPolicy"] = {"minimumBackoff": "1s", "maximumBackoff": "2s"}
    call("PUT", f"subscriptions/{sub}", config)
    return topic, sub


def publish(topic: str, *texts: str) -> None:
    call("POST", f"topics/{topic}:publish",
         {"messages": [{"data": base64.b64encode(t.encode()).decode()} for t in texts]})


def pull(sub: str) -> list[tuple[str, str, int]]:
    got = call("POST", f"subscriptions/{sub}:pull", {"maxMessages": 100, "returnImmediately": True})
    return [(base64.b64decode(m["message"]["data"]).decode(), m["ackId"], m.get("deliveryAttempt", 0))
            for m in got.get("receivedMessages", [])]


def pull_for(sub: str, seconds: float) -> list[tuple[str, str, int]]:
    """Pulls every 0.2 s for `seconds` (the emulator also updates expired leases on a pull)."""
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        out += pull(sub)
        time.sleep(0.2)
    return out


def nack(sub: str, ack_id: str) -> None:
    call("POST", f"subscriptions/{sub}:modifyAckDeadline", {"ackIds": [ack_id], "ackDeadlineSeconds": 0})


def nack_twice_and_wait(topic: str, sub: str, text: str) -> float | None:
    """Publishes `text`, nacks its first two deliveries (the first comes back at once, the
    second after the 1 s..2 s backoff); returns after how long it came back a third time."""
    publish(topic, text)
    for attempt in (1, 2):
        got = [m for m in pull_for(sub, 1.0) if m[0] == text]
        assert got, f"{text}: delivery {attempt} did not come"
        nack(sub, got[0][1])
    nacked = time.monotonic()
    while time.monotonic() - nacked < 15:
        if any(m[0] == text for m in pull(sub)):
            return time.monotonic() - nacked
        time.sleep(0.2)
    return None


def redelivery() -> int:
    topic, sub = setup(retry=True)
    back = nack_twice_and_wait(topic, sub, "control")
    print(f"control: a message nacked at attempt 2 came back after "
          f"{'%.1f s' % back if back is not None else 'NEVER (15 s)'} (retry policy 1s..2s)")
    # A lease that expires at attempt 2 is put on the backoff schedule but stays leased under
    # its ack id; the worker that held it acknowledges it late (it had stored the row).
    publish(topic, "late")
    first = [m for m in pull_for(sub, 1.0) if m[0] == "late"]
    print(f"late: delivery attempt {first[0][2]}; not acknowledged: the lease (10 s) expires")
    second = []
    while not second:
        second = [m for m in pull(sub) if m[0] == "late"]
        time.sleep(0.05)
    second_at = time.monotonic()
    print(f"late: delivered again, attempt {second[0][2]}; not acknowledged: it expires again")
    # Just past the second expiry: this pull moves it to the backoff schedule (1 s..2 s), and
    # the acknowledgement lands before that redelivery is due.
    time.sleep(max(0.0, second_at + 10.3 - time.monotonic()))
    pull(sub)
    call("POST", f"subscriptions/{sub}:acknowledge", {"ackIds": [second[0][1]]})
    print("late: acknowledged 0.3 s after its lease expired (its backoff redelivery was due)")
    time.sleep(3)
    back = nack_twice_and_wait(topic, sub, "after")
    print(f"after: a message nacked at attempt 2 came back after "
          f"{'%.1f s' % back if back is not None else 'NEVER (15 s)'}")
    if back is None:
        print("=> the emulator stopped redelivering with backoff on this subscription "
              "(Pub/Sub would redeliver after 1 s..2 s)")
        return 0
    print("=> the emulator behaved like Pub/Sub")
    return 1


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, value: int | str) -> bytes:
    if isinstance(value, str):
        raw = value.encode()
        return varint(number << 3 | 2) + varint(len(raw)) + raw
    return varint(number << 3) + varint(value)


def count_received(response: bytes) -> int:
    """Number of `received_messages` (field 1) in a StreamingPullResponse."""
    i, n = 0, 0
    while i < len(response):
        key, shift = 0, 0
        while True:
            b = response[i]; i += 1
            key |= (b & 0x7F) << shift; shift += 7
            if b < 0x80:
                break
        kind = key & 7
        if kind == 0:
            while response[i] >= 0x80:
                i += 1
            i += 1
            continue
        length, shift = 0, 0
        while True:
            b = response[i]; i += 1
            length |= (b & 0x7F) << shift; shift += 7
            if b < 0x80:
                break
        n += key >> 3 == 1
        i += length
    return n


def streaming_request(sub: str, outstanding: int, deadline_s: int) -> bytes:
    """A StreamingPullRequest, encoded by hand: subscription (field 1),
    stream_ack_deadline_seconds (5), max_outstanding_messages (7)."""
    return (field(1, f"projects/{PROJECT}/subscriptions/{sub}") + field(5, deadline_s)
            + field(7, outstanding))


GHOST_CLIENT = """
import sys, time, grpc
request = bytes.fromhex(sys.argv[2])
channel = grpc.insecure_channel(sys.argv[1])
call = channel.stream_stream("/google.pubsub.v1.Subscriber/StreamingPull",
                             request_serializer=lambda b: b, response_deserializer=lambda b: b)
def requests():
    yield request
    time.sleep(600)
for response in call(requests()):
    pass
"""


def ghost() -> int:
    import signal
    import subprocess
    topic, sub = setup(retry=False)
    client = subprocess.Popen([sys.executable, "-c", GHOST_CLIENT, HOST,
                               streaming_request(sub, 10, 10).hex()])
    time.sleep(2)  # the stream is open
    client.send_signal(signal.SIGKILL)
    client.wait()
    print("a StreamingPull client was SIGKILLed; publishing 50 messages, one every 0.1 s, "
          "while a REST pull polls every 0.1 s and acknowledges what it gets")
    start, seen = time.monotonic(), {}
    for i in range(50):
        publish(topic, f"m{i}")
        time.sleep(0.1)
    while time.monotonic() - start < 30:
        for text, ack_id, _ in pull(sub):
            seen.setdefault(text, time.monotonic() - start)
            call("POST", f"subscriptions/{sub}:acknowledge", {"ackIds": [ack_id]})
        time.sleep(0.1)
    early = sum(1 for t in seen.values() if t < 6)
    print(f"received {len(seen)} of 50 within 30 s, {early} within the first 6 s; the rest were "
          f"taken by the killed client's stream")
    if len(seen) < 45:
        print("=> the emulator keeps a dead client's stream and delivers to it "
              "(Pub/Sub ends the stream when the connection closes)")
        return 0
    print("=> the emulator ended the dead client's stream")
    return 1


def flow_control() -> int:
    import grpc  # .tools/venv has it (grpcio)
    topic, sub = setup(retry=False)
    publish(topic, *[f"m{i}" for i in range(300)])
    request = streaming_request(sub, outstanding=10, deadline_s=60)
    channel = grpc.insecure_channel(HOST)
    call_ = channel.stream_stream("/google.pubsub.v1.Subscriber/StreamingPull",
                                  request_serializer=lambda b: b,
                                  response_deserializer=lambda b: b)
    def requests():
        yield request
        time.sleep(5)  # keep the request side open: a half-close ends the stream

    stream = call_(requests(), timeout=3)
    received = 0
    try:
        for response in stream:
            received += count_received(response)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:  # the 3 s deadline ends the stream
            raise
    channel.close()
    print(f"StreamingPull with max_outstanding_messages=10, nothing acknowledged: received "
          f"{received} of 300 messages in 3 s")
    if received > 10:
        print("=> the emulator ignores flow control (Pub/Sub stops at 10 outstanding)")
        return 0
    print("=> the emulator honoured flow control")
    return 1


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    runs = {"ghost": ghost, "flow-control": flow_control, "redelivery": redelivery}
    if what not in runs:
        print(__doc__)
        sys.exit(2)
    sys.exit(runs[what]())

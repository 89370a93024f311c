"""Structural tests of what terraform/ promises (terraform/README.md), read from the .tf files.

`terraform validate` and `plan` need the Google provider, which cannot be downloaded here;
these tests check the promises that do not: dead-lettering, partitioning and clustering,
nobody public, pinned images, documented variables and outputs, resource-scoped IAM with an
exact list of project-level exceptions, secrets without values, the Cloud Run settings.
"""

from __future__ import annotations

import glob
import os
import re

import pytest

from conftest import APP, TF, blocks, read_json, var_name

PINNED = re.compile(r"(:[0-9]+\.[0-9]+\.[0-9]+(@sha256:[0-9a-f]{64})?|@sha256:[0-9a-f]{64})$")


def of_type(resources, rtype):
    return [r for r in resources if r.type == rtype]


def test_every_subscription_dead_letters_except_the_dead_letter_sink(configs, resources):
    subs = of_type(resources, "google_pubsub_subscription")
    assert subs, "no subscriptions found"
    dl_topics = {
        p["dead_letter_topic"] for s in subs for p in blocks(s.body.get("dead_letter_policy"))
    }
    without = sorted(s.address for s in subs if not blocks(s.body.get("dead_letter_policy")))
    # The sink of the dead-letter topic has nowhere further to send; it is the only exception.
    assert without == ["modules/pubsub:google_pubsub_subscription.dead_letter_bigquery"]
    sink = next(s for s in subs if s.address == without[0])
    assert sink.body["topic"].replace(".id", "") in {t.replace(".id", "") for t in dl_topics}
    for s in subs:
        for p in blocks(s.body.get("dead_letter_policy")):
            attempts = var_name(p["max_delivery_attempts"])
            default = configs[s.directory].variables[attempts]["default"]
            assert 5 <= default <= 100, s.address
        assert blocks(s.body.get("retry_policy")), f"{s.address} has no retry_policy"
        assert s.body.get("message_retention_duration"), f"{s.address} has no retention"
        assert blocks(s.body.get("expiration_policy")), f"{s.address} may expire"


def outage_tolerance_s(minimum: str, maximum: str, attempts: int) -> float:
    """Seconds from the first failed delivery to the last attempt when every attempt fails:
    Pub/Sub waits the retry policy's backoff (minimum, doubling, capped at maximum) between
    two attempts."""
    lo, hi = float(minimum.rstrip("s")), float(maximum.rstrip("s"))
    return sum(min(lo * 2 ** i, hi) for i in range(attempts - 1))


def test_a_bigquery_outage_of_minutes_dead_letters_nothing(configs, resources):
    """The BigQuery subscription nacks a message whenever a write fails, an outage included, and
    dead-letters it after max_delivery_attempts: its retry policy must spread those attempts
    over much more than a few minutes, and never redeliver at once (docs/gcp.md)."""
    pubsub = configs["modules/pubsub"].variables
    lo, hi = pubsub["retry_minimum_backoff"]["default"], pubsub["retry_maximum_backoff"]["default"]
    # The composition passes its own default to the module; the smaller one is what could deploy.
    attempts = min(pubsub["max_delivery_attempts"]["default"],
                   configs[APP].variables["max_delivery_attempts"]["default"])
    assert float(lo.rstrip("s")) >= 10, f"minimum backoff {lo}: redeliveries too fast"
    tolerated = outage_tolerance_s(lo, hi, attempts)
    assert tolerated >= 15 * 60, f"{attempts} attempts, {lo}..{hi}: dead-letters after {tolerated:.0f} s"
    for address in ("modules/pubsub:google_pubsub_subscription.records_bigquery",
                    "modules/pubsub:google_pubsub_subscription.dead_letter_bigquery"):
        sub = next(r for r in resources if r.address == address)
        policy = blocks(sub.body.get("retry_policy"))[0]
        assert var_name(policy["minimum_backoff"]) == "retry_minimum_backoff", address
        assert var_name(policy["maximum_backoff"]) == "retry_maximum_backoff", address
    # The arithmetic itself: Terraform's defaults (10s..300s, 10 attempts) give about 25 minutes;
    # the old immediate redelivery (no retry policy) gives none.
    assert outage_tolerance_s("10s", "300s", 10) == 10 + 20 + 40 + 80 + 160 + 300 * 4
    assert outage_tolerance_s("0s", "0s", 5) == 0


def test_the_records_subscription_writes_through_the_table_schema_with_metadata(resources):
    sub = next(r for r in resources if r.address == "modules/pubsub:google_pubsub_subscription.records_bigquery")
    bq = blocks(sub.body["bigquery_config"])[0]
    assert bq["use_table_schema"] is True and bq["write_metadata"] is True
    dl = next(r for r in resources if r.address == "modules/pubsub:google_pubsub_subscription.dead_letter_bigquery")
    assert blocks(dl.body["bigquery_config"])[0]["write_metadata"] is True


def test_tables_are_partitioned_by_day_on_publish_time_and_records_are_clustered(configs):
    bq = configs["modules/bigquery"]
    tables = {r.name: r for r in bq.resources if r.type == "google_bigquery_table"}
    assert set(tables) == {"records", "dead_letters"}
    for name, t in tables.items():
        part = blocks(t.body["time_partitioning"])[0]
        assert part["type"] == "DAY" and part["field"] == "publish_time", name
        assert "expiration_ms" in part, f"{name} partitions never expire"
        assert t.body["require_partition_filter"] is True, name
        assert bq.variables[var_name(t.body["deletion_protection"])]["default"] is True, name
    assert tables["records"].body["clustering"] == ["customerId"]


def test_table_schemas_come_from_the_single_schema_files(configs):
    bq = configs["modules/bigquery"]
    tables = {r.name: r for r in bq.resources if r.type == "google_bigquery_table"}
    assert tables["records"].body["schema"] == "${file(var.records_schema_file)}"
    assert tables["dead_letters"].body["schema"] == "${file(var.dead_letter_schema_file)}"
    call = configs[APP].modules["bigquery"]
    assert call["records_schema_file"] == "${local.repo_root}/schema/records.bigquery.json"
    assert call["dead_letter_schema_file"] == "${local.repo_root}/schema/dead_letters.bigquery.json"
    for rel, clustered in (("schema/records.bigquery.json", True), ("schema/dead_letters.bigquery.json", False)):
        fields = {f["name"]: f for f in read_json(rel)}
        assert fields["publish_time"]["type"] == "TIMESTAMP", rel
        if clustered:
            assert fields["customerId"]["type"] == "STRING", rel


def strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)
    elif isinstance(value, str):
        yield value


def test_nobody_public_anywhere(configs, resources):
    """allUsers or allAuthenticatedUsers appear nowhere but in the validations that refuse them."""
    public = ("allUsers", "allAuthenticatedUsers")
    checked = 0
    for c in configs.values():
        places = {f"{r.type}.{r.name}": r.body for r in c.resources + c.data}
        places.update({f"module.{n}": m for n, m in c.modules.items()})
        places.update({f"output.{n}": o for n, o in c.outputs.items()})
        places["locals"] = c.locals
        places.update({f"var.{n}.default": v.get("default") for n, v in c.variables.items()})
        for where, body in places.items():
            for text in strings(body):
                checked += 1
                assert not any(p in text for p in public), f"{c.directory} {where}: {text}"
    assert checked > 500
    values_files = glob.glob(os.path.join(TF, "envs", "*", "*.tfvars"))
    assert len(values_files) >= 3, values_files  # dev, prod and shared
    for f in values_files:
        with open(f, encoding="utf-8") as fh:
            text = fh.read()
        assert "allUsers" not in text and "allAuthenticatedUsers" not in text, f
    # The doors where a member list enters are validated to refuse them.
    for d, v in (("modules/cloud_run", "invokers"), (APP, "invokers"), ("modules/registry", "readers")):
        conditions = " ".join(x["condition"] for x in blocks(configs[d].variables[v].get("validation")))
        assert "allUsers" in conditions and "allAuthenticatedUsers" in conditions, f"{d} var.{v}"
    service = next(r for r in resources if r.type == "google_cloud_run_v2_service")
    assert service.body["invoker_iam_disabled"] is False


def images(value):
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "image":
                yield v
            else:
                yield from images(v)
    elif isinstance(value, list):
        for v in value:
            yield from images(v)


def test_every_image_is_pinned_by_digest_or_exact_version(configs, resources):
    found = 0
    for r in resources:
        for image in images(r.body):
            found += 1
            name = var_name(image)
            assert name, f"{r.address}: image {image!r} is not a validated variable"
            var = configs[r.directory].variables[name]
            conditions = " ".join(x["condition"] for x in blocks(var.get("validation")))
            assert "sha256" in conditions or r"[0-9]+\\.[0-9]+\\.[0-9]+" in conditions, f"{r.address}: var.{name} is not validated as pinned"
            if "default" in var:
                assert PINNED.search(var["default"]), f"{r.address}: default {var['default']} is not pinned"
                assert ":latest" not in var["default"]
    assert found == 3, f"expected the app and two sidecar images, found {found}"
    app = configs["modules/cloud_run"].variables["image"]
    assert "default" not in app and "@sha256:[0-9a-f]{64}$" in app["validation"][0]["condition"]


def test_every_variable_and_output_is_described_and_typed(configs):
    count = 0
    for c in configs.values():
        for name, var in c.variables.items():
            count += 1
            assert str(var.get("description", "")).strip(), f"{c.directory} var.{name} has no description"
            assert "type" in var, f"{c.directory} var.{name} has no type"
        for name, out in c.outputs.items():
            count += 1
            assert str(out.get("description", "")).strip(), f"{c.directory} output.{name} has no description"
    assert count > 100


def test_module_variables_with_constraints_are_validated(configs):
    """Names, ids and enumerations entering a module are checked where they enter."""
    for d, names in {
        "modules/pubsub": ["topic_name", "subscription_name", "max_delivery_attempts", "retry_maximum_backoff"],
        "modules/bigquery": ["dataset_id", "table_id", "partition_expiration_days"],
        "modules/cloud_run": ["service_name", "image", "invokers", "ingress", "admin_port", "max_instances"],
        "modules/github_wif": ["github_repository", "identities"],
        "modules/monitoring": ["service_host", "runbook_base_url", "page_notification_channels"],
    }.items():
        for n in names:
            assert blocks(configs[d].variables[n].get("validation")), f"{d} var.{n} is not validated"

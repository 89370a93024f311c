"""Cloud Run, secrets, state and monitoring as terraform/ declares them."""

from __future__ import annotations

import fnmatch
import glob
import json
import os
import re

from conftest import APP, ENVIRONMENTS, REPO, backend_config, blocks, env_values


def service(configs):
    return next(r for r in configs["modules/cloud_run"].resources if r.type == "google_cloud_run_v2_service")


def containers(svc):
    tpl = blocks(svc.body["template"])[0]
    static = {c["name"]: c for c in blocks(tpl["containers"])}
    for d in tpl.get("dynamic", []):
        if "containers" in d:
            for c in blocks(d["containers"]["content"]):
                static[c["name"]] = c
    return tpl, static


def test_the_app_container_carries_the_contract_settings(configs):
    env = configs["modules/cloud_run"].locals["app_env"]
    for key in ("BACKEND", "ADMIN_PORT", "GCP_PROJECT", "PUBSUB_TOPIC", "BQ_DATASET", "BQ_TABLE", "API_KEYS_FILE",
                "RATE_LIMIT_PER_SECOND", "RATE_LIMIT_BURST", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME", "LOG_FORMAT"):
        assert key in env, key
    assert env["BACKEND"] == "gcp" and env["LOG_FORMAT"] == "json"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://localhost:4317"
    assert "PUBSUB_SUBSCRIPTION" not in env, "the native BigQuery subscription writes rows; no worker in Terraform"
    assert "PORT" not in env, "Cloud Run sets PORT from the container port"
    assert configs["modules/cloud_run"].variables["admin_port"]["default"] == 9464


def test_probes_secrets_and_sidecars(configs):
    tpl, cs = containers(service(configs))
    assert set(cs) == {"app", "datadog-agent", "gmp-collector"}
    app = cs["app"]
    assert [p["container_port"] for p in blocks(app["ports"])] == [8080], "only 8080 is exposed; 9464 stays inside"
    assert blocks(blocks(app["startup_probe"])[0]["http_get"])[0]["path"] == "/readyz"
    assert blocks(blocks(app["liveness_probe"])[0]["http_get"])[0]["path"] == "/healthz"
    assert app["depends_on"] == ["datadog-agent"]
    # API keys: a Secret Manager volume mounted where API_KEYS_FILE points.
    locs = configs["modules/cloud_run"].locals
    assert locs["api_keys_file"].startswith("${local.api_keys_dir}/")
    keys_volume = next(v for v in blocks(tpl["volumes"]) if v["name"] == "api-keys")
    assert blocks(keys_volume["secret"])[0]["secret"] == "${var.api_keys_secret_id}"
    assert any(m["name"] == "api-keys" for m in blocks(app["volume_mounts"]))
    # Datadog: DD_API_KEY from Secret Manager, shared in-memory volume, OTLP on localhost:4317.
    dd = cs["datadog-agent"]
    dd_key = next(e for e in blocks(dd["env"]) if e["name"] == "DD_API_KEY")
    assert blocks(blocks(dd_key["value_source"])[0]["secret_key_ref"])[0]["secret"] == "${var.datadog_api_key_secret_id}"
    dd_env = locs["datadog_env"]
    for key in ("DD_SERVICE", "DD_ENV", "DD_VERSION"):
        assert key in dd_env, key
    assert dd_env["DD_OTLP_CONFIG_RECEIVER_PROTOCOLS_GRPC_ENDPOINT"] == "localhost:4317"
    # The OTLP metrics take the names dashboards/datadog and alerts/datadog query
    # (dashboards/datadog/README.md): per-bucket counts plus .count/.sum, and an env tag.
    assert dd_env["DD_OTLP_CONFIG_METRICS_ENABLED"] == "true"
    assert dd_env["DD_OTLP_CONFIG_METRICS_HISTOGRAMS_MODE"] == "counters"
    assert dd_env["DD_OTLP_CONFIG_METRICS_HISTOGRAMS_SEND_AGGREGATION_METRICS"] == "true"
    assert locs["app_env"]["OTEL_RESOURCE_ATTRIBUTES"] == "deployment.environment.name=${var.env}"
    logs = next(v for v in blocks(tpl["volumes"]) if v["name"] == "shared-logs")
    assert blocks(logs["empty_dir"])[0]["medium"] == "MEMORY"
    # The app writes its log lines where the sidecar tails them: LOG_FILE matches the agent's
    # DD_SERVERLESS_LOG_PATH glob, on the shared volume both containers mount.
    log_file, tail_glob = locs["app_env"]["LOG_FILE"], dd_env["DD_SERVERLESS_LOG_PATH"]
    assert fnmatch.fnmatchcase(log_file, tail_glob), (log_file, tail_glob)
    assert not fnmatch.fnmatchcase(log_file + ".1", tail_glob), "the rotated file would be read twice"
    for c in (app, dd):
        mount = next(m for m in blocks(c["volume_mounts"]) if m["name"] == "shared-logs")
        assert mount["mount_path"] == "${local.logs_dir}" and log_file.startswith("${local.logs_dir}/")
    # GMP scrapes the admin port, not the public one.
    assert "var.admin_port" in str(locs["gmp_config"])


def resolve(run, expr):
    """A literal, or the value a ${local.x} / ${var.x} (its default) stands for in modules/cloud_run."""
    if isinstance(expr, str) and expr.startswith("${local."):
        return run.locals[expr[len("${local."):-1]]
    if isinstance(expr, str) and expr.startswith("${var."):
        return run.variables[expr[len("${var."):-1]]["default"]
    return expr


def test_every_probe_times_out_before_its_next_period(configs):
    """The provider's reference for google_cloud_run_v2_service: timeout_seconds "must be smaller
    than periodSeconds" (the API itself says period >= timeout; strictly smaller satisfies both)."""
    _, cs = containers(service(configs))
    probes = 0
    for name, c in cs.items():
        for kind in ("startup_probe", "liveness_probe"):
            for probe in blocks(c.get(kind)):
                probes += 1
                timeout, period = probe.get("timeout_seconds", 1), probe.get("period_seconds", 10)
                assert timeout < period, f"{name} {kind}: timeout {timeout} s is not below the period {period} s"
    assert probes == 3, "app: startup and liveness; datadog-agent: startup"
    # The time each container has to start is what it was before the timeouts were shortened.
    window = {n: blocks(c["startup_probe"])[0]["failure_threshold"] * blocks(c["startup_probe"])[0]["period_seconds"]
              for n, c in cs.items() if c.get("startup_probe")}
    assert window == {"app": 60, "datadog-agent": 30}


def test_every_container_gets_whole_vcpus(configs):
    """Cloud Run allows less than 1 vCPU only with maximum concurrency 1 and request-based billing
    ("Configure CPU limits for services"). This service runs many requests at once with CPU always
    allocated, so each container, the sidecars included, gets a whole number of vCPUs."""
    run = configs["modules/cloud_run"]
    assert run.variables["concurrency"]["default"] > 1 and run.variables["cpu_always_allocated"]["default"] is True
    _, cs = containers(service(configs))
    total = 0
    for name, c in cs.items():
        limits = blocks(c["resources"])[0]["limits"]
        cpu = resolve(run, limits["cpu"])
        assert cpu in ("1", "2", "4", "6", "8"), f"{name}: cpu {cpu!r} is not a whole number of vCPUs"
        total += int(cpu)
        assert resolve(run, limits["memory"]) in ("512Mi", "1Gi", "2Gi"), f"{name}: memory {limits['memory']}"
    assert total == 3, "app + Datadog + GMP sidecars; terraform/README.md prices 3 vCPU per warm instance"
    # The app's own CPU is a variable: its validation refuses fractions too.
    conditions = " ".join(v["condition"] for v in blocks(run.variables["app_cpu"].get("validation")))
    assert '"1"' in conditions and '"0.5"' not in conditions


def test_secret_values_never_enter_terraform(resources):
    versions = [r.address for r in resources if r.type == "google_secret_manager_secret_version"]
    # The one version is the GMP sidecar's scrape configuration, which is not secret.
    assert versions == ["modules/cloud_run:google_secret_manager_secret_version.gmp_config"]
    gmp = next(r for r in resources if r.address == versions[0])
    assert gmp.body["secret_data"] == "${local.gmp_config}"
    for r in resources:
        if r.type == "google_secret_manager_secret":
            assert "secret_data" not in r.body, r.address


def test_state_lives_in_gcs_with_the_bucket_given_at_init(configs):
    for d in (APP, "envs/shared", "bootstrap"):
        backends = [b for t in configs[d].terraform for b in blocks(t.get("backend"))]
        assert len(backends) == 1 and "gcs" in backends[0], d
        assert "bucket" not in (backends[0]["gcs"] or {}), f"{d} hard-codes the state bucket"
    # One root for every environment: a prefix written in it would put dev and prod in one state.
    app_backend = [b for t in configs[APP].terraform for b in blocks(t.get("backend"))][0]
    assert not app_backend["gcs"], "envs/app's backend must be partial: the prefix comes from <env>.backend.hcl"
    for env in ENVIRONMENTS:
        # The prefixes of the former per-environment roots, so existing state is found where it was.
        assert backend_config(env) == {"prefix": f"challenge-latam-api/{env}"}, env
    bucket = next(r for r in configs["modules/state_bucket"].resources if r.type == "google_storage_bucket")
    assert bucket.body["uniform_bucket_level_access"] is True
    assert bucket.body["public_access_prevention"] == "enforced"
    assert blocks(bucket.body["versioning"])[0]["enabled"] is True


def test_prod_keeps_a_warm_instance_and_dev_scales_to_zero(configs):
    assert env_values("prod")["min_instances"] >= 1
    assert env_values("dev")["min_instances"] == 0
    for env in ENVIRONMENTS:
        values = env_values(env)
        assert values["env"] == env
        assert values["max_instances"] >= values["min_instances"]
    assert configs[APP].modules["cloud_run"]["image"] == "${var.image}"
    assert configs[APP].variables["enable_edge"]["default"] is False


def test_dashboards_and_slos_are_read_from_the_repository_with_fileset(configs):
    stack = configs[APP]
    assert stack.modules["monitoring"]["dashboards_dir"] == "${local.repo_root}/dashboards/cloud-monitoring"
    assert stack.modules["datadog"]["dashboards_dir"] == "${local.repo_root}/dashboards/datadog"
    assert "alerts/cloud-monitoring" in stack.modules["monitoring"]["slo_files"]
    assert "alerts/datadog" in stack.modules["datadog"]["slo_files"]
    for d, rtype in (("modules/monitoring", "google_monitoring_dashboard"), ("modules/datadog", "datadog_dashboard_json")):
        dash = next(r for r in configs[d].resources if r.type == rtype)
        assert dash.body["for_each"] == "${module.dashboards.dashboards}", d
        assert configs[d].modules["dashboards"]["directory"] == "${var.dashboards_dir}", d
    files = configs["modules/dashboard_files"].locals
    assert 'fileset(var.directory, "*.json")' in files["plain"]
    assert 'fileset(var.directory, "*.json.tftpl")' in files["templated"] and "templatefile(" in files["templated"]
    assert configs["modules/monitoring"].modules["dashboards"]["template_vars"] == {"project_id": "${var.project_id}", "env": "${var.env}"}


def test_the_dashboard_files_fit_the_resources_that_read_them():
    cm = sorted(glob.glob(os.path.join(REPO, "dashboards", "cloud-monitoring", "*.json")))
    dd = sorted(glob.glob(os.path.join(REPO, "dashboards", "datadog", "*.json")))
    for f in cm:
        with open(f, encoding="utf-8") as fh:
            doc = json.load(fh)
        assert doc.get("displayName"), f"{f}: google_monitoring_dashboard needs displayName"
        assert any(k in doc for k in ("mosaicLayout", "gridLayout", "rowLayout", "columnLayout")), f
    for f in dd:
        with open(f, encoding="utf-8") as fh:
            doc = json.load(fh)
        assert doc.get("title") and doc.get("layout_type") and "widgets" in doc, f"{f}: not a Datadog dashboard"


def test_burn_rate_policies_combine_a_long_and_a_short_window(configs):
    mon = configs["modules/monitoring"]
    burn = next(r for r in mon.resources if r.type == "google_monitoring_alert_policy" and r.name == "burn_rate")
    assert burn.body["combiner"] == "AND"
    conds = blocks(burn.body["conditions"])
    assert len(conds) == 2
    filters = [blocks(c["condition_threshold"])[0]["filter"] for c in conds]
    assert "select_slo_burn_rate" in filters[0] and "lookback_duration" in filters[0]
    assert "select_slo_burn_rate" in filters[1] and "short_lookback_duration" in filters[1]
    assert "runbook" in str(burn.body["documentation"])
    names = {r.name for r in mon.resources if r.type == "google_monitoring_alert_policy"}
    assert names == {"burn_rate", "budget", "pipeline", "uptime"}
    pipeline = mon.locals["pipeline_alerts"]
    assert set(pipeline) == {"export_failing", "dead_lettered", "oldest_unacked", "dead_letter_backlog"}
    uptime = next(r for r in mon.resources if r.type == "google_monitoring_uptime_check_config")
    http = blocks(uptime.body["http_check"])[0]
    assert http["path"] == "/healthz" and blocks(http["service_agent_authentication"])[0]["type"] == "OIDC_TOKEN"


def test_the_budget_policies_read_the_remaining_budget_as_generated(configs):
    """One resource for both remaining-budget kinds: the tiers below a fraction and one
    budget-exhausted policy per SLO, each on the generator's selector (select_slo_budget_fraction),
    comparison and threshold (slo_data checks them: COMPARISON_LT, at most 0 when exhausted),
    with its runbook and, when exhausted, the error-budget policy."""
    mon = configs["modules/monitoring"]
    policy = next(r for r in mon.resources if r.type == "google_monitoring_alert_policy" and r.name == "budget")
    assert policy.body["for_each"] == "${local.budget_policies}"
    cond = blocks(blocks(policy.body["conditions"])[0]["condition_threshold"])[0]
    assert cond["filter"].startswith("${each.value.selector}(") and "google_monitoring_slo.this[each.value.slo_key].id" in cond["filter"]
    assert cond["comparison"] == "${each.value.comparison}" and cond["threshold_value"] == "${each.value.threshold_value}"
    policies = mon.locals["budget_policies"]
    for source in ("cloud_monitoring_budget_alerts", "cloud_monitoring_budget_exhausted_alerts"):
        assert f"module.slo_data.{source}" in policies, f"budget_policies does not read {source}"
    assert 'selector = "select_slo_budget_fraction"' in policies and 'comparison = "COMPARISON_LT"' in policies
    assert "selector = a.selector" in policies and "threshold_value = a.threshold_value" in policies
    assert policies.count("a.runbook") == 2 and "slo/POLICY.md" in policies


def test_the_export_alert_reads_the_bigquery_subscription_state(configs):
    """Both subscriptions are BigQuery (export) subscriptions: push metrics describe a push
    endpoint they do not have. Cloud Monitoring's pubsub metrics list gives export subscriptions
    subscription/export_push_subscription_details (labels subscription_type, subscription_state);
    the error states are BigQueryConfig.State's."""
    pipeline = configs["modules/monitoring"].locals["pipeline_alerts"]
    for name, alert in pipeline.items():
        assert "push_request" not in alert["filter"], f"{name}: a push metric on a BigQuery subscription"
    export = pipeline["export_failing"]
    assert 'pubsub.googleapis.com/subscription/export_push_subscription_details' in export["filter"]
    assert "${local.sub_filter}" in export["filter"] and export["aligner"] == "ALIGN_MAX"
    states = re.search(r'subscription_state=monitoring\.regex\.full_match\(\\?"\(\?i\)\(([a-z_|]+)\)\\?"\)', export["filter"])
    assert states, export["filter"]
    assert set(states.group(1).split("|")) >= {"permission_denied", "not_found", "schema_mismatch"}
    assert "active" not in states.group(1).split("|")


def test_checkov_skips_carry_a_reason(resources):
    skips = [(r.address, c) for r in resources for c in r.comments if "checkov:skip" in c]
    assert skips, "no skips found: the parser lost the comments"
    for address, c in skips:
        _, _, rest = c.partition("checkov:skip=")
        check, _, reason = rest.partition(":")
        assert check.startswith("CKV_") and len(reason.split()) >= 6, f"{address}: {c}"


def test_every_runbook_the_policies_link_exists():
    import re

    text = open(os.path.join(REPO, "terraform", "modules", "monitoring", "main.tf"), encoding="utf-8").read()
    paths = set(re.findall(r"((?:terraform|alerts)/runbooks/[A-Za-z0-9_.-]+\.md)", text))
    assert len(paths) >= 4
    for p in sorted(paths):
        assert os.path.isfile(os.path.join(REPO, p)), f"{p} is linked by an alert policy but does not exist"

# terraform test: the generated SLO documents (testdata/ holds the generator's exact shape)
# become the maps the monitoring and datadog modules iterate, with the queries they need.

variables {
  cloud_monitoring_files = ["testdata/alerts/cloud-monitoring/sample-api.json"]
  datadog_files          = ["testdata/alerts/datadog/sample-api.json"]
  repo_root              = "testdata"
}

run "every_slo_and_tier_becomes_one_entry" {
  command = plan

  assert {
    condition     = length(output.cloud_monitoring_slos) == 3
    error_message = "three SLOs in the sample"
  }

  assert {
    condition     = toset(keys(output.cloud_monitoring_burn_rate_alerts)) == toset(["sample-api/availability/fast", "sample-api/availability/slow", "sample-api/latency/fast", "sample-api/freshness/medium"])
    error_message = "one burn-rate policy per (SLO, tier)"
  }

  assert {
    condition     = keys(output.cloud_monitoring_budget_alerts) == ["sample-api/availability/slowest"]
    error_message = "one budget policy for the tier Cloud Monitoring cannot express"
  }

  assert {
    condition     = output.cloud_monitoring_slos["sample-api/freshness"].request_based_sli == null && output.cloud_monitoring_slos["sample-api/freshness"].windows_based_sli.window_period == "60s"
    error_message = "a windows-based SLI passes through with its block names"
  }

  assert {
    condition     = output.cloud_monitoring_slos["sample-api/latency"].request_based_sli.distribution_cut.range.max == 0.25
    error_message = "a distribution cut keeps its range"
  }
}

run "burn_rate_alerts_carry_the_budget_arithmetic" {
  command = plan

  assert {
    condition     = abs(output.cloud_monitoring_burn_rate_alerts["sample-api/availability/fast"].budget_consumed_fraction - 0.02) < 1e-9
    error_message = "14.4x over 1h spends 2 % of a 30-day budget"
  }

  assert {
    condition     = abs(output.cloud_monitoring_burn_rate_alerts["sample-api/availability/fast"].error_ratio_threshold - 0.0072) < 1e-9
    error_message = "14.4x a 0.05 % budget is a 0.72 % error ratio"
  }

  assert {
    condition     = abs(output.cloud_monitoring_burn_rate_alerts["sample-api/freshness/medium"].hours_to_exhaustion - 112) < 1e-9
    error_message = "at 6x a 28-day budget lasts 112 hours"
  }
}

run "datadog_monitor_queries_follow_the_slo_alert_syntax" {
  command = plan

  assert {
    condition     = format(output.datadog_monitors["sample-api/availability/fast"].query_format, "abc123") == "burn_rate(\"abc123\").over(\"30d\").long_window(\"1h\").short_window(\"5m\") > 14.4"
    error_message = "burn-rate monitor query"
  }

  assert {
    condition     = format(output.datadog_monitors["sample-api/availability/slowest"].query_format, "abc123") == "error_budget(\"abc123\").over(\"30d\") > 90"
    error_message = "error-budget monitor query"
  }

  assert {
    condition     = output.datadog_slos["sample-api/freshness"].time_slice.threshold == 60 && output.datadog_slos["sample-api/freshness"].numerator == null
    error_message = "a time_slice SLO keeps its specification and has no count queries"
  }

  assert {
    condition     = output.datadog_monitors["sample-api/freshness/slow"].critical == 3
    error_message = "the monitor's critical threshold is the burn rate"
  }

  # Datadog's "Burn Rate Alerts" page: the short window is specified in minutes (its 30-day
  # table: 5, 30 and 120 minutes). The sample's "2h", as the generator writes it, becomes 120m.
  assert {
    condition     = format(output.datadog_monitors["sample-api/freshness/slow"].query_format, "abc123") == "burn_rate(\"abc123\").over(\"30d\").long_window(\"24h\").short_window(\"120m\") > 3"
    error_message = "a short window given in hours is written in minutes"
  }

  assert {
    condition     = output.datadog_monitors["sample-api/freshness/slow"].long_hours == 24 && output.datadog_monitors["sample-api/freshness/slow"].short_minutes == 120
    error_message = "the windows are carried as numbers for the checks"
  }
}

run "a_missing_runbook_is_refused" {
  command = plan

  variables {
    repo_root = "tests"
  }

  expect_failures = [output.cloud_monitoring_burn_rate_alerts, output.cloud_monitoring_budget_exhausted_alerts]
}

# The real generated documents go through the same mapping, and every runbook they link exists
# (a plan on GitHub would fail otherwise).
run "the_generated_documents_of_this_repository_map_too" {
  command = plan

  variables {
    cloud_monitoring_files = [for f in fileset("../../../alerts/cloud-monitoring", "*.json") : "../../../alerts/cloud-monitoring/${f}"]
    datadog_files          = [for f in fileset("../../../alerts/datadog", "*.json") : "../../../alerts/datadog/${f}"]
    repo_root              = "../../.."
  }

  assert {
    condition     = alltrue([for k, a in output.cloud_monitoring_burn_rate_alerts : a.threshold >= 1])
    error_message = "every generated burn-rate threshold is at least 1"
  }

  assert {
    condition     = alltrue([for k, m in output.datadog_monitors : m.type != "burn_rate" || can(regex("\\.long_window\\(\"[0-9]+h\"\\)\\.short_window\\(\"[0-9]+m\"\\)", m.query_format))])
    error_message = "every generated Datadog burn-rate monitor has its long window in hours and its short window in minutes"
  }

  assert {
    condition     = length([for k, m in output.datadog_monitors : m if m.type == "burn_rate"]) >= 3
    error_message = "the generated documents hold burn-rate monitors"
  }
}

# A long window beyond Datadog's 48 hours, or a short window that is not shorter than the long
# one, is refused rather than sent to Datadog.
run "impossible_datadog_burn_rate_windows_are_refused" {
  command = plan

  variables {
    cloud_monitoring_files = []
    datadog_files          = ["testdata/bad-windows/sample-api.json"]
  }

  expect_failures = [output.datadog_monitors]
}

# Dev and prod share a Datadog organization: with a scope, every SLI query names its
# environment (env for the service's metrics, project_id for the GCP integration's).
run "datadog_queries_are_scoped_to_the_environment" {
  command = plan

  variables {
    cloud_monitoring_files = []
    datadog_files          = [for f in fileset("../../../alerts/datadog", "*.json") : "../../../alerts/datadog/${f}"]
    repo_root              = "../../.."
    datadog_scope          = { env = "dev", project_id = "challenge-latam-dev" }
  }

  assert {
    condition = alltrue([for s in values(output.datadog_slos) : s.type != "metric" || (
      startswith(split("{", s.numerator)[1], "env:dev AND service:") && startswith(split("{", s.denominator)[1], "env:dev AND service:")
    )])
    error_message = "every metric SLI filter opens with env:dev"
  }

  assert {
    condition     = alltrue([for s in values(output.datadog_slos) : s.type != "time_slice" || strcontains(s.time_slice.query, "{project_id:challenge-latam-dev AND subscription_id:")])
    error_message = "the freshness SLI on the GCP integration's metric is scoped by project"
  }

  assert {
    condition     = length([for s in values(output.datadog_slos) : s if s.type == "time_slice"]) == 1 && length([for s in values(output.datadog_slos) : s if s.type == "metric"]) >= 2
    error_message = "the generated document has the metric SLOs and the freshness time_slice SLO"
  }
}

# A filter the scoping does not recognise (the sample's `{*}`) is refused rather than left
# counting every environment.
run "an_unscoped_query_is_refused" {
  command = plan

  variables {
    datadog_scope = { env = "prod", project_id = "challenge-latam-prod" }
  }

  expect_failures = [output.datadog_slos]
}

# The period's whole budget spent: one policy per SLO that carries the condition, on the
# remaining-budget fraction below 0, as Prometheus' and Datadog's budget-exhausted alerts.
run "budget_exhausted_alerts_compare_the_remaining_fraction_below_zero" {
  command = plan

  assert {
    condition     = keys(output.cloud_monitoring_budget_exhausted_alerts) == ["sample-api/availability"]
    error_message = "one budget-exhausted policy, for the SLO whose document carries the condition"
  }

  assert {
    condition = (output.cloud_monitoring_budget_exhausted_alerts["sample-api/availability"].selector == "select_slo_budget_fraction"
      && output.cloud_monitoring_budget_exhausted_alerts["sample-api/availability"].comparison == "COMPARISON_LT"
    && output.cloud_monitoring_budget_exhausted_alerts["sample-api/availability"].threshold_value == 0)
    error_message = "remaining budget fraction below 0"
  }
}

run "the_generated_documents_give_every_slo_a_budget_exhausted_policy" {
  command = plan

  variables {
    cloud_monitoring_files = [for f in fileset("../../../alerts/cloud-monitoring", "*.json") : "../../../alerts/cloud-monitoring/${f}"]
    datadog_files          = []
    repo_root              = "../../.."
  }

  assert {
    condition     = length(output.cloud_monitoring_budget_exhausted_alerts) == length(output.cloud_monitoring_slos) && length(output.cloud_monitoring_slos) >= 4
    error_message = "every generated SLO has its budget-exhausted policy"
  }

  assert {
    condition     = alltrue([for a in values(output.cloud_monitoring_budget_exhausted_alerts) : endswith(a.runbook, "${a.alert}.md")])
    error_message = "each policy links the runbook of its alert"
  }
}

# A threshold above 0 would fire while budget is left: refused rather than freeze releases early.
run "a_budget_exhausted_threshold_above_zero_is_refused" {
  command = plan

  variables {
    cloud_monitoring_files = ["testdata/bad-exhausted/sample-api.json"]
    datadog_files          = []
  }

  expect_failures = [output.cloud_monitoring_budget_exhausted_alerts]
}

# Cloud Monitoring: the dashboards of dashboards/cloud-monitoring, the SLOs and their multi-window
# burn-rate alert policies generated from slo/ (alerts/cloud-monitoring/*.json, mapped by the
# slo_data module), alerts on the pipeline (export failures, dead letters, backlog age), and an
# authenticated uptime check of /healthz. Every policy's documentation says what fired, with the
# numbers, and links its runbook in this repository.

terraform {
  required_version = ">= 1.9"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.14, < 8.0"
    }
  }
}

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  severity = {
    page   = "CRITICAL"
    ticket = "WARNING"
  }
  channels = {
    page   = var.page_notification_channels
    ticket = var.ticket_notification_channels
  }
  runbook_url = "${var.runbook_base_url}/"
}

# --- Dashboards: every *.json, and every *.json.tftpl rendered with the project and env ---------

module "dashboards" {
  source = "../dashboard_files"

  directory     = var.dashboards_dir
  template_vars = { project_id = var.project_id, env = var.env }
  required_keys = ["displayName"]
}

resource "google_monitoring_dashboard" "this" {
  for_each = module.dashboards.dashboards

  project        = var.project_id
  dashboard_json = each.value

  # The SLO dashboard charts the SLOs by name.
  depends_on = [google_monitoring_slo.this]
}

# --- SLOs ---------------------------------------------------------------------------------------

resource "google_monitoring_custom_service" "api" {
  project      = var.project_id
  service_id   = var.service_name
  display_name = "${var.service_name} (${var.env})"
}

module "slo_data" {
  source = "../slo_data"

  cloud_monitoring_files = var.slo_files
  repo_root              = var.repo_root
}

resource "google_monitoring_slo" "this" {
  for_each = module.slo_data.cloud_monitoring_slos

  project             = var.project_id
  service             = google_monitoring_custom_service.api.service_id
  slo_id              = each.value.slo_id
  display_name        = each.value.display_name
  goal                = each.value.goal
  rolling_period_days = each.value.rolling_period_days

  # The generated keys mirror this resource's blocks, so each maps one to one.
  dynamic "request_based_sli" {
    for_each = each.value.request_based_sli == null ? [] : [each.value.request_based_sli]
    content {
      dynamic "good_total_ratio" {
        for_each = try(request_based_sli.value.good_total_ratio, null) == null ? [] : [request_based_sli.value.good_total_ratio]
        content {
          good_service_filter  = try(good_total_ratio.value.good_service_filter, null)
          bad_service_filter   = try(good_total_ratio.value.bad_service_filter, null)
          total_service_filter = try(good_total_ratio.value.total_service_filter, null)
        }
      }
      dynamic "distribution_cut" {
        for_each = try(request_based_sli.value.distribution_cut, null) == null ? [] : [request_based_sli.value.distribution_cut]
        content {
          distribution_filter = distribution_cut.value.distribution_filter
          range {
            min = try(distribution_cut.value.range.min, null)
            max = try(distribution_cut.value.range.max, null)
          }
        }
      }
    }
  }

  dynamic "windows_based_sli" {
    for_each = each.value.windows_based_sli == null ? [] : [each.value.windows_based_sli]
    content {
      window_period          = windows_based_sli.value.window_period
      good_bad_metric_filter = try(windows_based_sli.value.good_bad_metric_filter, null)

      dynamic "metric_mean_in_range" {
        for_each = try(windows_based_sli.value.metric_mean_in_range, null) == null ? [] : [windows_based_sli.value.metric_mean_in_range]
        content {
          time_series = metric_mean_in_range.value.time_series
          range {
            min = try(metric_mean_in_range.value.range.min, null)
            max = try(metric_mean_in_range.value.range.max, null)
          }
        }
      }

      dynamic "metric_sum_in_range" {
        for_each = try(windows_based_sli.value.metric_sum_in_range, null) == null ? [] : [windows_based_sli.value.metric_sum_in_range]
        content {
          time_series = metric_sum_in_range.value.time_series
          range {
            min = try(metric_sum_in_range.value.range.min, null)
            max = try(metric_sum_in_range.value.range.max, null)
          }
        }
      }
    }
  }
}

# --- Burn-rate policies: long AND short window above the tier's rate ----------------------------

resource "google_monitoring_alert_policy" "burn_rate" {
  for_each = module.slo_data.cloud_monitoring_burn_rate_alerts

  project               = var.project_id
  display_name          = "${each.value.display_name}: ${each.value.tier} burn (${each.value.threshold}x) [${var.env}]"
  combiner              = "AND"
  severity              = local.severity[each.value.severity]
  notification_channels = local.channels[each.value.severity]
  user_labels = {
    slo      = each.value.slo_id
    tier     = each.value.tier
    severity = each.value.severity
    env      = var.env
  }

  conditions {
    display_name = "burn rate over ${each.value.lookback_duration} > ${each.value.threshold}"
    condition_threshold {
      filter          = "select_slo_burn_rate(\"${google_monitoring_slo.this[each.value.slo_key].id}\", \"${each.value.lookback_duration}\")"
      comparison      = "COMPARISON_GT"
      threshold_value = each.value.threshold
      duration        = "0s"
    }
  }

  conditions {
    display_name = "burn rate over ${each.value.short_lookback_duration} > ${each.value.threshold}"
    condition_threshold {
      filter          = "select_slo_burn_rate(\"${google_monitoring_slo.this[each.value.slo_key].id}\", \"${each.value.short_lookback_duration}\")"
      comparison      = "COMPARISON_GT"
      threshold_value = each.value.threshold
      duration        = "0s"
    }
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "${each.value.display_name}: error budget burning at more than ${each.value.threshold}x [${var.env}]"
    content   = <<-EOT
      **${each.value.display_name}** (${var.service_name}, ${var.env}) is burning its error budget
      faster than ${each.value.threshold}x over both ${each.value.lookback_duration} and
      ${each.value.short_lookback_duration}: the error ratio is above
      ${format("%.4f", each.value.error_ratio_threshold * 100)} % against a goal of ${each.value.goal * 100} %.
      At this rate the whole 30-day budget lasts ${format("%.0f", each.value.hours_to_exhaustion)} h, and the
      long window alone has spent ${format("%.1f", each.value.budget_consumed_fraction * 100)} % of it.

      Severity: ${each.value.severity}. Runbook: ${local.runbook_url}${each.value.runbook}
    EOT
  }

  alert_strategy {
    auto_close = "86400s"
  }
}

# --- Remaining-budget policies ---------------------------------------------------------------------
# Two kinds, one shape (a single threshold on the SLO's remaining budget fraction), so one
# resource: the tiers no burn-rate lookback can express (below a fraction of the budget), and
# the budget-exhausted policy, the whole period's budget spent (slo/POLICY.md's release freeze):
# the counterpart of the generated Prometheus and Datadog budget-exhausted alerts, and what the
# release gate (scripts/release/budget_gate.py) reads with the same selector and threshold.

locals {
  budget_policies = merge(
    {
      for k, a in module.slo_data.cloud_monitoring_budget_alerts : k => {
        slo_key         = a.slo_key
        labels          = { slo = a.slo_id, tier = a.tier }
        severity        = a.severity
        display_name    = "${a.display_name}: error budget below ${a.remaining_budget_fraction_below * 100} % [${var.env}]"
        selector        = "select_slo_budget_fraction"
        comparison      = "COMPARISON_LT"
        threshold_value = a.remaining_budget_fraction_below
        subject         = "${a.display_name}: less than ${a.remaining_budget_fraction_below * 100} % of the error budget left [${var.env}]"
        content         = <<-EOT
          **${a.display_name}** (${var.service_name}, ${var.env}) has less than
          ${a.remaining_budget_fraction_below * 100} % of its error budget left.
          This replaces the ${a.tier} burn-rate tier: ${a.reason}.

          Severity: ${a.severity}. Runbook: ${local.runbook_url}${a.runbook}
        EOT
      }
    },
    {
      for k, a in module.slo_data.cloud_monitoring_budget_exhausted_alerts : "${k}/exhausted" => {
        slo_key         = a.slo_key
        labels          = { slo = a.slo_id }
        severity        = a.severity
        display_name    = "${a.display_name}: error budget exhausted [${var.env}]"
        selector        = a.selector
        comparison      = a.comparison
        threshold_value = a.threshold_value
        subject         = "${a.display_name}: the ${a.period_days}-day error budget is spent [${var.env}]"
        content         = <<-EOT
          **${a.display_name}** (${var.service_name}, ${var.env}) has spent its whole error
          budget: fewer than ${a.goal * 100} % of events were good over the last
          ${a.period_days} days (${a.reason}).

          The error-budget policy applies (${local.runbook_url}slo/POLICY.md): releases of this service
          stop, except fixes and reliability work, until the remaining budget is above 0 again; the
          release gate refuses promotions meanwhile unless overridden with a reason.

          Severity: ${a.severity}. Alert: ${a.alert}. Runbook: ${local.runbook_url}${a.runbook}
        EOT
      }
    },
  )
}

resource "google_monitoring_alert_policy" "budget" {
  for_each = local.budget_policies

  project               = var.project_id
  display_name          = each.value.display_name
  combiner              = "OR"
  severity              = local.severity[each.value.severity]
  notification_channels = local.channels[each.value.severity]
  user_labels           = merge(each.value.labels, { severity = each.value.severity, env = var.env })

  conditions {
    display_name = "remaining error budget < ${each.value.threshold_value}"
    condition_threshold {
      filter          = "${each.value.selector}(\"${google_monitoring_slo.this[each.value.slo_key].id}\")"
      comparison      = each.value.comparison
      threshold_value = each.value.threshold_value
      duration        = "0s"
    }
  }

  documentation {
    mime_type = "text/markdown"
    subject   = each.value.subject
    content   = each.value.content
  }
}

# --- The pipeline: Pub/Sub -> BigQuery ------------------------------------------------------------

locals {
  sub_filter    = "resource.type=\"pubsub_subscription\" AND resource.label.subscription_id=\"${var.subscription_name}\""
  dl_sub_filter = "resource.type=\"pubsub_subscription\" AND resource.label.subscription_id=\"${var.dead_letter_subscription_name}\""

  pipeline_alerts = {
    # A BigQuery subscription whose writes fail (table gone, permission revoked, schema drift)
    # leaves the ACTIVE state for one of BigQueryConfig.State's error states. Cloud Monitoring
    # reports an export subscription's type and state as the gauge
    # subscription/export_push_subscription_details (labels subscription_type,
    # subscription_state); subscription/push_request_count counts attempts on a push endpoint,
    # which a BigQuery subscription does not have. The states are matched without regard to
    # case, and only the error states: an unknown label value pages nobody by mistake (the
    # oldest-unacked policy below still catches any stall).
    export_failing = {
      name       = "records subscription cannot write to BigQuery"
      filter     = "metric.type=\"pubsub.googleapis.com/subscription/export_push_subscription_details\" AND ${local.sub_filter} AND metric.label.subscription_state=monitoring.regex.full_match(\"(?i)(permission_denied|not_found|schema_mismatch|in_transit_location_restriction|vertex_ai_location_restriction)\")"
      aligner    = "ALIGN_MAX"
      threshold  = 0
      duration   = "600s"
      severity   = "page"
      runbook    = "terraform/runbooks/PipelineExportFailing.md"
      what       = "Writes of ${var.subscription_name} into BigQuery have failed for 10 minutes. Check the subscription's state (gcloud pubsub subscriptions describe), the table and the Pub/Sub service agent's dataEditor grant on it."
      comparison = "COMPARISON_GT"
    }
    dead_lettered = {
      name       = "records are being dead-lettered"
      filter     = "metric.type=\"pubsub.googleapis.com/subscription/dead_letter_message_count\" AND ${local.sub_filter}"
      aligner    = "ALIGN_DELTA"
      threshold  = 0
      duration   = "0s"
      severity   = "ticket"
      runbook    = "terraform/runbooks/PipelineDeadLetters.md"
      what       = "Messages of ${var.subscription_name} exhausted their delivery attempts and went to the dead-letter topic; they are in the dead-letter table for inspection and replay."
      comparison = "COMPARISON_GT"
    }
    oldest_unacked = {
      name       = "records are not reaching BigQuery (oldest unacked age)"
      filter     = "metric.type=\"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" AND ${local.sub_filter}"
      aligner    = "ALIGN_MAX"
      threshold  = var.oldest_unacked_age_threshold_seconds
      duration   = "300s"
      severity   = "page"
      runbook    = "terraform/runbooks/PipelineOldestUnacked.md"
      what       = "The oldest unacknowledged record on ${var.subscription_name} is older than ${var.oldest_unacked_age_threshold_seconds} s for 5 minutes: records are not becoming queryable (freshness SLO: 60 s)."
      comparison = "COMPARISON_GT"
    }
    dead_letter_backlog = {
      name       = "dead letters are not reaching their table"
      filter     = "metric.type=\"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" AND ${local.dl_sub_filter}"
      aligner    = "ALIGN_MAX"
      threshold  = 3600
      duration   = "600s"
      severity   = "ticket"
      runbook    = "terraform/runbooks/PipelineDeadLetters.md"
      what       = "${var.dead_letter_subscription_name} has held a message for more than an hour: the dead-letter table is not taking writes, and these messages expire with the subscription's retention."
      comparison = "COMPARISON_GT"
    }
  }
}

resource "google_monitoring_alert_policy" "pipeline" {
  for_each = local.pipeline_alerts

  project               = var.project_id
  display_name          = "${var.service_name}: ${each.value.name}"
  combiner              = "OR"
  severity              = local.severity[each.value.severity]
  notification_channels = local.channels[each.value.severity]
  user_labels = {
    severity = each.value.severity
    env      = var.env
  }

  conditions {
    display_name = each.value.name
    condition_threshold {
      filter          = each.value.filter
      comparison      = each.value.comparison
      threshold_value = each.value.threshold
      duration        = each.value.duration
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = each.value.aligner
      }
      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "${var.service_name}: ${each.value.name}"
    content   = "${each.value.what}\n\nFires when the ${lower(trimprefix(each.value.aligner, "ALIGN_"))} per minute stays ${each.value.comparison == "COMPARISON_GT" ? "above" : "below"} ${each.value.threshold} for ${each.value.duration} (subscription $${resource.label.subscription_id}). Severity: ${each.value.severity}. Runbook: ${local.runbook_url}${each.value.runbook}"
  }
}

# --- Uptime check, authenticated ---------------------------------------------------------------
# The service is not public: the check sends an identity token of the Monitoring service agent
# (granted run.invoker by the environment, output uptime_check_member). /healthz needs no API key.

resource "google_monitoring_uptime_check_config" "healthz" {
  project      = var.project_id
  display_name = var.uptime_check_name
  timeout      = "10s"
  period       = "60s"

  http_check {
    path           = "/healthz"
    port           = 443
    use_ssl        = true
    validate_ssl   = true
    request_method = "GET"

    service_agent_authentication {
      type = "OIDC_TOKEN"
    }

    accepted_response_status_codes {
      status_value = 200
    }
  }

  monitored_resource {
    type = "uptime_url"
    labels = {
      project_id = var.project_id
      host       = var.service_host
    }
  }
}

resource "google_monitoring_alert_policy" "uptime" {
  project               = var.project_id
  display_name          = "${var.service_name}: /healthz failing from several regions"
  combiner              = "OR"
  severity              = "CRITICAL"
  notification_channels = local.channels["page"]
  user_labels = {
    severity = "page"
    env      = var.env
  }

  conditions {
    display_name = "uptime check failing in more than one region"
    condition_threshold {
      filter          = "metric.type=\"monitoring.googleapis.com/uptime_check/check_passed\" AND resource.type=\"uptime_url\" AND metric.label.check_id=\"${google_monitoring_uptime_check_config.healthz.uptime_check_id}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 1
      duration        = "120s"
      aggregations {
        alignment_period     = "120s"
        per_series_aligner   = "ALIGN_NEXT_OLDER"
        cross_series_reducer = "REDUCE_COUNT_FALSE"
        group_by_fields      = ["resource.label.host"]
      }
      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "${var.service_name}: /healthz failing [${var.env}]"
    content   = "The authenticated uptime check of https://${var.service_host}/healthz fails from more than one region for 2 minutes: the service cannot serve. Severity: page. Runbook: ${local.runbook_url}terraform/runbooks/ServiceDown.md"
  }
}

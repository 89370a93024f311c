# Datadog: the dashboards of dashboards/datadog, and the SLOs with their SLO alert monitors
# generated from slo/ (alerts/datadog/*.json, mapped by the slo_data module). Each monitor's
# query is built from the generated fields and the created SLO's id.

terraform {
  required_version = ">= 1.9"
  required_providers {
    datadog = {
      source  = "DataDog/datadog"
      version = ">= 3.40, < 5.0"
    }
  }
}

module "dashboards" {
  source = "../dashboard_files"

  directory     = var.dashboards_dir
  required_keys = ["title", "layout_type", "widgets"]
}

resource "datadog_dashboard_json" "this" {
  for_each = module.dashboards.dashboards

  dashboard = each.value
}

module "slo_data" {
  source = "../slo_data"

  datadog_files = var.slo_files
  repo_root     = var.repo_root
  # Dev and prod share the Datadog organization: every SLI query counts only this environment.
  datadog_scope = { env = var.env, project_id = var.project_id }
}

resource "datadog_service_level_objective" "this" {
  for_each = module.slo_data.datadog_slos

  name        = "${each.value.name} [${var.env}]"
  type        = each.value.type
  description = each.value.description
  tags        = concat(each.value.tags, ["env:${var.env}", "source:${each.value.source}"])

  thresholds {
    timeframe = each.value.timeframe
    target    = each.value.target
  }

  dynamic "query" {
    for_each = each.value.type == "metric" ? [1] : []
    content {
      numerator   = each.value.numerator
      denominator = each.value.denominator
    }
  }

  dynamic "sli_specification" {
    for_each = each.value.type == "time_slice" ? [each.value.time_slice] : []
    content {
      time_slice {
        comparator             = sli_specification.value.comparator
        threshold              = sli_specification.value.threshold
        query_interval_seconds = sli_specification.value.query_interval_seconds
        query {
          formula {
            formula_expression = "query1"
          }
          query {
            metric_query {
              name  = "query1"
              query = sli_specification.value.query
            }
          }
        }
      }
    }
  }
}

resource "datadog_monitor" "slo" {
  for_each = module.slo_data.datadog_monitors

  name  = "${each.value.slo_name}: ${each.value.tier} ${each.value.type == "burn_rate" ? "burn rate" : "error budget"} [${var.env}]"
  type  = "slo alert"
  query = format(each.value.query_format, datadog_service_level_objective.this[each.value.slo_key].id)

  message = <<-EOT
    ${each.value.slo_name} (${var.env}): ${each.value.type == "burn_rate" ? "the error budget burns faster than ${each.value.critical}x over both windows" : "more than ${each.value.critical} % of the error budget is spent"}.
    ${each.value.reason == null ? "" : "Why an error-budget monitor: ${each.value.reason}."}
    Severity: ${each.value.severity}. Runbook: ${var.runbook_base_url}/${each.value.runbook}
    ${join(" ", var.notify[each.value.severity])}
  EOT

  monitor_thresholds {
    critical = each.value.critical
  }

  priority = each.value.severity == "page" ? "1" : "3"
  tags     = ["service:${each.value.service}", "slo:${each.value.slo_id}", "tier:${each.value.tier}", "severity:${each.value.severity}", "env:${var.env}"]
}

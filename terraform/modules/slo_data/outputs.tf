output "cloud_monitoring_slos" {
  description = "Cloud Monitoring SLOs by \"<service>/<slo_id>\": goal, period and the SLI block (request_based_sli or windows_based_sli)."
  value       = local.cm_slos

  precondition {
    condition     = alltrue([for s in values(local.cm_slos) : (s.request_based_sli == null) != (s.windows_based_sli == null)])
    error_message = "every Cloud Monitoring SLO needs exactly one of request_based_sli and windows_based_sli."
  }

  precondition {
    condition     = alltrue([for s in values(local.cm_slos) : s.goal > 0 && s.goal < 1 && s.rolling_period_days >= 1 && s.rolling_period_days <= 30])
    error_message = "every goal must be in (0, 1) and every rolling period 1 to 30 days."
  }
}

output "cloud_monitoring_burn_rate_alerts" {
  description = "Burn-rate alert policies by \"<service>/<slo_id>/<tier>\", with long and short lookbacks, threshold and the budget arithmetic for the alert text."
  value       = local.cm_burn_rate_alerts

  precondition {
    condition = alltrue([for a in values(local.cm_burn_rate_alerts) :
      can(regex("^[0-9]+s$", a.lookback_duration)) && can(regex("^[0-9]+s$", a.short_lookback_duration))
      && tonumber(trimsuffix(a.lookback_duration, "s")) <= 86400
      && tonumber(trimsuffix(a.short_lookback_duration, "s")) < tonumber(trimsuffix(a.lookback_duration, "s"))
    ])
    error_message = "burn-rate lookbacks must be seconds, the long one at most 86400s (Cloud Monitoring's limit) and the short one shorter."
  }

  precondition {
    condition     = alltrue([for a in values(local.cm_burn_rate_alerts) : fileexists("${var.repo_root}/${a.runbook}") || !var.require_runbooks])
    error_message = "every burn-rate alert's runbook must be a file in this repository."
  }
}

output "cloud_monitoring_budget_alerts" {
  description = "Remaining-budget alert policies by \"<service>/<slo_id>/<tier>\" (the tiers Cloud Monitoring cannot express as burn rates)."
  value       = local.cm_budget_alerts

  precondition {
    condition     = alltrue([for a in values(local.cm_budget_alerts) : a.remaining_budget_fraction_below > 0 && a.remaining_budget_fraction_below < 1 && a.reason != ""])
    error_message = "every budget alert needs a fraction in (0, 1) and the reason it replaces a burn-rate tier."
  }
}

output "cloud_monitoring_budget_exhausted_alerts" {
  description = "Budget-exhausted alert policies by \"<service>/<slo_id>\": the remaining-budget selector, comparison and threshold the generator gives, severity, runbook."
  value       = local.cm_budget_exhausted_alerts

  # The remaining budget as a fraction (select_slo_budget_fraction: 1 untouched, 0 spent, below
  # 0 missed), compared below a threshold no higher than 0: "the whole budget is spent".
  precondition {
    condition = alltrue([for a in values(local.cm_budget_exhausted_alerts) :
      a.selector == "select_slo_budget_fraction" && a.comparison == "COMPARISON_LT" && a.threshold_value <= 0 && a.threshold_value > -1
    ])
    error_message = "a budget-exhausted alert compares select_slo_budget_fraction with COMPARISON_LT and a threshold in (-1, 0]."
  }

  precondition {
    condition     = alltrue([for a in values(local.cm_budget_exhausted_alerts) : fileexists("${var.repo_root}/${a.runbook}") || !var.require_runbooks])
    error_message = "every budget-exhausted alert's runbook must be a file in this repository."
  }
}

output "datadog_slos" {
  description = "Datadog metric SLOs by \"<service>/<slo_id>\"."
  value       = local.dd_slos

  precondition {
    condition     = alltrue([for s in values(local.dd_slos) : contains(["metric", "time_slice"], s.type) && contains(["7d", "30d", "90d"], s.timeframe) && s.target > 0 && s.target < 100])
    error_message = "every Datadog SLO must be a metric or time_slice SLO over 7d, 30d or 90d with a target in (0, 100)."
  }

  precondition {
    condition = alltrue([for s in values(local.dd_slos) :
      s.type == "metric" ? (s.numerator != null && s.denominator != null) : (s.time_slice != null)
    ])
    error_message = "a metric SLO needs query.numerator and query.denominator; a time_slice SLO needs sli_specification.time_slice."
  }

  precondition {
    condition = var.datadog_scope == null ? true : alltrue([for s in values(local.dd_slos) : alltrue([
      for q in compact([s.numerator, s.denominator, try(s.time_slice.query, null)]) :
      strcontains(q, local.dd_service_scope) || strcontains(q, local.dd_gcp_scope)
    ])])
    error_message = "with datadog_scope set, every SLI query must be scoped to the environment; a generated filter opened with something other than {service: or {subscription_id:."
  }
}

output "datadog_monitors" {
  description = "Datadog SLO alert monitors by \"<service>/<slo_id>/<tier>\", each with query_format (format() it with the SLO id)."
  value       = local.dd_monitors

  precondition {
    condition     = alltrue([for m in values(local.dd_monitors) : contains(["burn_rate", "error_budget"], m.type)])
    error_message = "Datadog monitors must be of type burn_rate or error_budget."
  }

  # Datadog's "Burn Rate Alerts": 1 hour <= long window <= 48 hours, the short window in minutes
  # and always less than the long window.
  precondition {
    condition = alltrue([for m in values(local.dd_monitors) : m.type != "burn_rate" || (
      m.long_hours != null && m.short_minutes != null
      && try(m.long_hours >= 1 && m.long_hours <= 48 && m.short_minutes >= 1 && m.short_minutes < m.long_hours * 60, false)
    )])
    error_message = "every Datadog burn-rate monitor needs a long window of 1h to 48h in hours and a shorter short window in minutes or hours."
  }
}

# Reads the SLO documents the SLO generator writes (alerts/cloud-monitoring/<service>.json and
# alerts/datadog/<service>.json, generated from slo/ by tools/slo) and flattens them into maps
# the monitoring and datadog modules create resources from with for_each. No provider, so
# `terraform test` checks the mapping offline against testdata/ (the exact generated shape).

terraform {
  required_version = ">= 1.9"
}

locals {
  cm_docs = [for f in var.cloud_monitoring_files : jsondecode(file(f))]
  dd_docs = [for f in var.datadog_files : jsondecode(file(f))]

  # --- Cloud Monitoring ---------------------------------------------------------------------
  cm_slos = merge([
    for doc in local.cm_docs : {
      for slo in doc.slos : "${doc.service}/${slo.slo_id}" => {
        service             = doc.service
        source              = doc.source
        slo_id              = slo.slo_id
        display_name        = slo.display_name
        goal                = slo.goal
        rolling_period_days = slo.rolling_period_days
        # Exactly one of the two is set; the keys mirror google_monitoring_slo's blocks.
        request_based_sli = try(slo.request_based_sli, null)
        windows_based_sli = try(slo.windows_based_sli, null)
        burn_rate_alerts  = try(slo.burn_rate_alerts, [])
        budget_alerts     = try(slo.budget_alerts, [])
        # The period's whole budget spent: the generator's counterpart of the Prometheus and
        # Datadog budget-exhausted alerts (slo/POLICY.md's release freeze).
        budget_exhausted_alert = try(slo.budget_exhausted_alert, null)
      }
    }
  ]...)

  # What every alert policy of an SLO says about the SLO, once: each kind below (burn rate,
  # remaining budget, budget exhausted) merges its own fields into it, so the three cannot
  # drift apart in what they carry of the SLO.
  cm_alert_slo = {
    for key, slo in local.cm_slos : key => {
      slo_key      = key
      service      = slo.service
      slo_id       = slo.slo_id
      display_name = slo.display_name
      goal         = slo.goal
      period_days  = slo.rolling_period_days
    }
  }

  cm_burn_rate_alerts = merge([
    for key, slo in local.cm_slos : {
      for a in slo.burn_rate_alerts : "${key}/${a.tier}" => merge(local.cm_alert_slo[key], {
        tier                    = a.tier
        severity                = a.severity
        lookback_duration       = a.lookback_duration
        short_lookback_duration = a.short_lookback_duration
        threshold               = a.threshold
        runbook                 = a.runbook
        # SRE Workbook arithmetic for the alert text: share of the period's budget spent when
        # the long window burns at the threshold, and how long the budget lasts at that rate.
        budget_consumed_fraction = a.threshold * tonumber(trimsuffix(a.lookback_duration, "s")) / (slo.rolling_period_days * 86400)
        hours_to_exhaustion      = slo.rolling_period_days * 24 / a.threshold
        error_ratio_threshold    = a.threshold * (1 - slo.goal)
      })
    }
  ]...)

  cm_budget_alerts = merge([
    for key, slo in local.cm_slos : {
      for a in slo.budget_alerts : "${key}/${a.tier}" => merge(local.cm_alert_slo[key], {
        tier                            = a.tier
        severity                        = a.severity
        reason                          = a.reason
        remaining_budget_fraction_below = a.remaining_budget_fraction_below
        runbook                         = a.runbook
      })
    }
  ]...)

  cm_budget_exhausted_alerts = {
    for key, slo in local.cm_slos : key => merge(local.cm_alert_slo[key], {
      alert           = slo.budget_exhausted_alert.alert
      severity        = slo.budget_exhausted_alert.severity
      reason          = slo.budget_exhausted_alert.reason
      runbook         = slo.budget_exhausted_alert.runbook
      selector        = slo.budget_exhausted_alert.filter
      comparison      = slo.budget_exhausted_alert.comparison
      threshold_value = slo.budget_exhausted_alert.threshold_value
    }) if slo.budget_exhausted_alert != null
  }

  # --- Datadog ------------------------------------------------------------------------------
  # The scope each SLI filter opens with (var.datadog_scope). The generator opens every filter
  # with `{service:` (the service's metrics) or `{subscription_id:` (GCP integration metrics);
  # without a scope these replacements change nothing.
  dd_service_scope = try("{env:${var.datadog_scope.env} AND service:", "{service:")
  dd_gcp_scope     = try("{project_id:${var.datadog_scope.project_id} AND subscription_id:", "{subscription_id:")

  dd_slos = merge([
    for doc in local.dd_docs : {
      for slo in doc.slos : "${doc.service}/${slo.slo_id}" => {
        service     = doc.service
        source      = doc.source
        slo_id      = slo.slo_id
        name        = slo.name
        description = slo.description
        type        = slo.type
        # type "metric": good/total count queries; type "time_slice": one query compared with
        # a threshold each interval (the generator's freshness SLO on the subscription's backlog age).
        numerator   = try(replace(replace(slo.query.numerator, "{service:", local.dd_service_scope), "{subscription_id:", local.dd_gcp_scope), null)
        denominator = try(replace(replace(slo.query.denominator, "{service:", local.dd_service_scope), "{subscription_id:", local.dd_gcp_scope), null)
        time_slice = try(merge(slo.sli_specification.time_slice, {
          query = replace(replace(slo.sli_specification.time_slice.query, "{service:", local.dd_service_scope), "{subscription_id:", local.dd_gcp_scope)
        }), null)
        target    = slo.target
        timeframe = slo.timeframe
        tags      = slo.tags
        monitors  = slo.monitors
      }
    }
  ]...)

  # Burn-rate windows as Datadog's burn-rate alerts take them ("Burn Rate Alerts": the long
  # window is specified in hours, 1h to 48h; the short window in minutes, below the long one;
  # its 30-day table gives 5, 30 and 120 minutes). The generator writes the short window in its
  # largest unit ("2h"); it is rewritten in minutes here ("120m"). null when not parseable: the
  # datadog_monitors output refuses it.
  dd_windows = {
    for key, slo in local.dd_slos : key => {
      for m in slo.monitors : m.tier => {
        long_hours    = try(tonumber(regex("^([0-9]+)h$", m.long_window)[0]), null)
        short_minutes = try(tonumber(regex("^([0-9]+)[mh]$", m.short_window)[0]) * (endswith(m.short_window, "h") ? 60 : 1), null)
      } if m.type == "burn_rate"
    }
  }

  # Each monitor's query, with %s where the created SLO's id goes (format() in the datadog module).
  dd_monitors = merge([
    for key, slo in local.dd_slos : {
      for m in slo.monitors : "${key}/${m.tier}" => {
        slo_key       = key
        service       = slo.service
        slo_id        = slo.slo_id
        slo_name      = slo.name
        tier          = m.tier
        severity      = m.severity
        type          = m.type
        runbook       = m.runbook
        reason        = try(m.reason, null)
        long_hours    = try(local.dd_windows[key][m.tier].long_hours, null)
        short_minutes = try(local.dd_windows[key][m.tier].short_minutes, null)
        query_format = (m.type == "burn_rate"
          ? "burn_rate(\"%s\").over(\"${slo.timeframe}\").long_window(\"${m.long_window}\").short_window(\"${try(format("%dm", local.dd_windows[key][m.tier].short_minutes), m.short_window)}\") > ${tostring(m.threshold)}"
        : "error_budget(\"%s\").over(\"${slo.timeframe}\") > ${tostring(m.threshold_percent_consumed)}")
        critical = m.type == "burn_rate" ? m.threshold : m.threshold_percent_consumed
      }
    }
  ]...)
}

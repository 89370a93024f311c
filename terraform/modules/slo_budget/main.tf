# Error-budget arithmetic of one SLO and its multi-window burn-rate tiers (the SRE Workbook's
# table in CONTRACT.md). No provider: the monitoring module uses the figures in the text of
# every alert, and tests/budget.tftest.hcl checks them against the Workbook's own numbers.

terraform {
  required_version = ">= 1.9"
}

locals {
  period_seconds = var.rolling_period_days * 86400
  budget         = 1 - var.goal

  tiers = {
    for t in var.tiers : t.tier => {
      burn_rate = t.burn_rate
      # The error ratio at which the tier fires: burn rate times the allowed error ratio.
      error_ratio_threshold = t.burn_rate * local.budget
      # Share of the whole period's budget spent when the long window has burned at that rate.
      budget_consumed_fraction = t.burn_rate * t.long_window_seconds / local.period_seconds
      # How long the whole budget lasts at that burn rate.
      hours_to_exhaustion = local.period_seconds / t.burn_rate / 3600
      long_window_seconds = t.long_window_seconds
    }
  }
}

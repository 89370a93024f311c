# terraform test: the budget arithmetic against the SRE Workbook's table (chapter 5): at 99.9 %
# over 30 days, 14.4x for 1 h spends 2 % of the budget, 6x for 6 h 5 %, 1x for 3 d 10 %.

run "the_workbook_table_at_three_nines" {
  command = plan

  variables {
    goal                = 0.999
    rolling_period_days = 30
    tiers = [
      { tier = "fast", long_window_seconds = 3600, burn_rate = 14.4 },
      { tier = "medium", long_window_seconds = 21600, burn_rate = 6 },
      { tier = "slow", long_window_seconds = 86400, burn_rate = 3 },
      { tier = "slowest", long_window_seconds = 259200, burn_rate = 1 },
    ]
  }

  assert {
    condition     = abs(output.tiers["fast"].budget_consumed_fraction - 0.02) < 1e-9
    error_message = "14.4x over 1h must spend 2 % of a 30-day budget"
  }

  assert {
    condition     = abs(output.tiers["medium"].budget_consumed_fraction - 0.05) < 1e-9
    error_message = "6x over 6h must spend 5 % of a 30-day budget"
  }

  assert {
    condition     = abs(output.tiers["slow"].budget_consumed_fraction - 0.10) < 1e-9
    error_message = "3x over 1d must spend 10 % of a 30-day budget"
  }

  assert {
    condition     = abs(output.tiers["slowest"].budget_consumed_fraction - 0.10) < 1e-9
    error_message = "1x over 3d must spend 10 % of a 30-day budget"
  }

  assert {
    condition     = abs(output.tiers["fast"].hours_to_exhaustion - 50) < 1e-9
    error_message = "at 14.4x a 30-day budget lasts 50 hours"
  }

  assert {
    condition     = abs(output.error_budget_minutes - 43.2) < 1e-9
    error_message = "99.9 % over 30 days is 43.2 minutes of budget"
  }
}

run "the_availability_slo_of_the_contract" {
  command = plan

  variables {
    goal  = 0.9995
    tiers = [{ tier = "fast", long_window_seconds = 3600, burn_rate = 14.4 }]
  }

  assert {
    condition     = abs(output.tiers["fast"].error_ratio_threshold - 0.0072) < 1e-9
    error_message = "14.4x of a 0.05 % budget is a 0.72 % error ratio"
  }

  assert {
    condition     = abs(output.error_budget_minutes - 21.6) < 1e-9
    error_message = "99.95 % over 30 days is 21.6 minutes of budget"
  }
}

run "a_goal_of_one_is_refused" {
  command = plan

  variables {
    goal = 1
  }

  expect_failures = [var.goal]
}

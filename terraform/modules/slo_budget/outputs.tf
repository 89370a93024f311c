output "error_budget_fraction" {
  description = "Allowed fraction of bad events (1 - goal)."
  value       = local.budget
}

output "error_budget_minutes" {
  description = "The budget as minutes of total outage over the rolling period."
  value       = local.budget * local.period_seconds / 60
}

output "tiers" {
  description = "Per tier: burn rate, error-ratio threshold, budget fraction consumed when it fires, hours until the budget is gone at that rate."
  value       = local.tiers
}

output "slo_ids" {
  description = "Datadog SLO ids by \"<service>/<slo_id>\"."
  value       = { for k, s in datadog_service_level_objective.this : k => s.id }
}

output "monitor_ids" {
  description = "Datadog monitor ids by \"<service>/<slo_id>/<tier>\"."
  value       = { for k, m in datadog_monitor.slo : k => m.id }
}

output "dashboard_urls" {
  description = "Datadog dashboard URLs by file name."
  value       = { for k, d in datadog_dashboard_json.this : k => d.url }
}

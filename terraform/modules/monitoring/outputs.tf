output "uptime_check_member" {
  description = "IAM member of the Monitoring service agent that signs the uptime check's identity token (grant it run.invoker)."
  value       = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-monitoring-notification.iam.gserviceaccount.com"
}

output "slo_ids" {
  description = "Created SLO resource names by \"<service>/<slo_id>\"."
  value       = { for k, s in google_monitoring_slo.this : k => s.id }
}

output "dashboard_ids" {
  description = "Created dashboards by file name."
  value       = { for k, d in google_monitoring_dashboard.this : k => d.id }
}

output "alert_policy_count" {
  description = "Number of alert policies this module manages (burn rate, remaining and exhausted budget, pipeline, uptime)."
  value       = length(google_monitoring_alert_policy.burn_rate) + length(google_monitoring_alert_policy.budget) + length(google_monitoring_alert_policy.pipeline) + 1
}

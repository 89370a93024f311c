output "service_name" {
  description = "Cloud Run service name."
  value       = google_cloud_run_v2_service.api.name
}

output "uri" {
  description = "Service URL (audience of the identity tokens in X-Serverless-Authorization)."
  value       = google_cloud_run_v2_service.api.uri
}

output "host" {
  description = "Service host name without scheme (the uptime check's target)."
  value       = trimprefix(google_cloud_run_v2_service.api.uri, "https://")
}

output "runtime_service_account" {
  description = "Email of the runtime service account."
  value       = google_service_account.runtime.email
}

output "latest_revision" {
  description = "Latest ready revision (check-rollout.sh compares its digest)."
  value       = google_cloud_run_v2_service.api.latest_ready_revision
}

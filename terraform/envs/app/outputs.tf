output "service_url" {
  description = "Cloud Run URL (audience of identity tokens)."
  value       = module.cloud_run.uri
}

output "service_name" {
  description = "Cloud Run service name."
  value       = module.cloud_run.service_name
}

output "runtime_service_account" {
  description = "Runtime identity of the service."
  value       = module.cloud_run.runtime_service_account
}

output "topic" {
  description = "Records topic (PUBSUB_TOPIC)."
  value       = module.pubsub.topic_name
}

output "records_table" {
  description = "Records table, project.dataset.table."
  value       = module.bigquery.records_table
}

output "dead_letter_table" {
  description = "Dead-letter table, project.dataset.table."
  value       = module.bigquery.dead_letter_table
}

output "secrets" {
  description = "Secret ids to add versions to with gcloud (terraform/README.md)."
  value       = module.secrets.secret_ids
}

output "cloud_monitoring_slos" {
  description = "Cloud Monitoring SLO names."
  value       = module.monitoring.slo_ids
}

output "edge_ip" {
  description = "Edge load balancer IP, when enabled."
  value       = var.enable_edge ? module.edge[0].ip_address : null
}

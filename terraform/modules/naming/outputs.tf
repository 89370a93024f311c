output "names" {
  description = "Hyphenated resource names by role (Cloud Run, Pub/Sub, secrets, uptime check, edge)."
  value       = local.hyphen
}

output "service_accounts" {
  description = "Service account ids by role (runtime, deployer, readonly); each is 6 to 30 characters."
  value       = local.service_accounts
}

output "bigquery" {
  description = "BigQuery dataset and table ids (underscores: BigQuery ids cannot hold hyphens)."
  value       = local.bigquery
}

output "labels" {
  description = "Labels every labelled resource of the environment carries."
  value       = local.labels
}

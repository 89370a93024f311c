output "service_url" {
  description = "Cloud Run URL of the environment."
  value       = module.stack.service_url
}

output "service_name" {
  description = "Cloud Run service name (check-rollout.sh)."
  value       = module.stack.service_name
}

output "records_table" {
  description = "Records table, project.dataset.table."
  value       = module.stack.records_table
}

output "dead_letter_table" {
  description = "Dead-letter table, project.dataset.table."
  value       = module.stack.dead_letter_table
}

output "secrets" {
  description = "Secret ids that need a version added with gcloud."
  value       = module.stack.secrets
}

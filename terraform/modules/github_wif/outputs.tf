output "provider_name" {
  description = "Full provider resource name: the WIF_PROVIDER variable of the GitHub environments."
  value       = google_iam_workload_identity_pool_provider.github.name
}

output "service_accounts" {
  description = "Service account emails by identity key: the SERVICE_ACCOUNT variable of each GitHub environment."
  value       = { for k, sa in google_service_account.this : k => sa.email }
}

output "members" {
  description = "IAM members (serviceAccount:...) by identity key, for resource-scoped grants elsewhere."
  value       = { for k, sa in google_service_account.this : k => sa.member }
}

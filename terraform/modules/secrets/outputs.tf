output "secret_ids" {
  description = "Secret ids by key (the value Cloud Run's secret references take)."
  value       = { for k, s in google_secret_manager_secret.this : k => s.secret_id }
}

output "secret_names" {
  description = "Full secret resource names by key (projects/P/secrets/S)."
  value       = { for k, s in google_secret_manager_secret.this : k => s.name }
}

output "wif_provider" {
  description = "WIF_PROVIDER of the GitHub environments <env> and <env>-readonly."
  value       = module.wif.provider_name
}

output "deployer_service_account" {
  description = "SERVICE_ACCOUNT of the GitHub environment <env>."
  value       = module.wif.service_accounts["deployer"]
}

output "readonly_service_account" {
  description = "SERVICE_ACCOUNT of the GitHub environment <env>-readonly."
  value       = module.wif.service_accounts["readonly"]
}

output "state_bucket" {
  description = "TF_STATE_BUCKET of the GitHub environments."
  value       = module.state.bucket
}

output "registry" {
  description = "REGISTRY repository variable of the workflows."
  value       = module.registry.registry
}

output "build_wif_provider" {
  description = "BUILD_WIF_PROVIDER repository variable."
  value       = module.wif.provider_name
}

output "build_service_account" {
  description = "BUILD_SERVICE_ACCOUNT repository variable."
  value       = module.wif.service_accounts["build"]
}

output "attribute_condition" {
  description = "CEL attribute condition for google_iam_workload_identity_pool_provider."
  value       = local.condition
}

output "subjects" {
  description = "The exact subject claims the condition accepts (empty: any subject of the repository)."
  value       = local.subjects
}

variable "cloud_monitoring_files" {
  description = "Paths of the generated alerts/cloud-monitoring/<service>.json documents."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for f in var.cloud_monitoring_files : endswith(f, ".json")])
    error_message = "cloud_monitoring_files must be .json documents."
  }
}

variable "datadog_files" {
  description = "Paths of the generated alerts/datadog/<service>.json documents."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for f in var.datadog_files : endswith(f, ".json")])
    error_message = "datadog_files must be .json documents."
  }
}

variable "repo_root" {
  description = "Repository root, against which the runbook paths in the documents are resolved."
  type        = string
  default     = "."
}

variable "require_runbooks" {
  description = "Fail when an alert's runbook file does not exist in the repository."
  type        = bool
  default     = true
}

variable "datadog_scope" {
  description = <<-EOT
    The environment the Datadog SLIs are for. Dev and prod report to one Datadog organization
    and the generated queries name no environment, so each query's filter is scoped: metrics of
    the service and its agent carry `env` (DD_ENV), the GCP integration's carry `project_id`.
    null leaves the queries as generated.
  EOT
  type = object({
    env        = string
    project_id = string
  })
  default = null
}

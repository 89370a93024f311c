variable "env" {
  description = "Environment: dev or prod (SLO and monitor names, env tag)."
  type        = string

  validation {
    condition     = contains(["dev", "prod"], var.env)
    error_message = "env must be dev or prod."
  }
}

variable "project_id" {
  description = "GCP project of this environment: scopes the SLI queries on GCP integration metrics, which carry project_id rather than env."
  type        = string
}

variable "dashboards_dir" {
  description = "Directory of Datadog dashboard JSON files (dashboards/datadog); every *.json becomes one dashboard."
  type        = string
}

variable "slo_files" {
  description = "Generated SLO documents (alerts/datadog/*.json)."
  type        = list(string)
}

variable "repo_root" {
  description = "Repository root, to resolve the runbook paths of the SLO documents."
  type        = string
}

variable "runbook_base_url" {
  description = "URL prefix under which repository paths open, without a trailing slash."
  type        = string

  validation {
    condition     = can(regex("^https://", var.runbook_base_url)) && !endswith(var.runbook_base_url, "/")
    error_message = "runbook_base_url must be an https URL without a trailing slash."
  }
}

variable "notify" {
  description = "Datadog notification handles by severity, for example { page = [\"@pagerduty-challenge-latam\"], ticket = [\"@slack-challenge-latam\"] }."
  type = object({
    page   = list(string)
    ticket = list(string)
  })
  default = { page = [], ticket = [] }

  validation {
    condition     = alltrue([for h in concat(var.notify.page, var.notify.ticket) : startswith(h, "@")])
    error_message = "notification handles start with @."
  }
}

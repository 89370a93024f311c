variable "project_id" {
  description = "Google Cloud project of the dev environment."
  type        = string
}

variable "region" {
  description = "Region of Cloud Run and BigQuery."
  type        = string
  default     = "us-central1"
}

variable "image" {
  description = "API image by digest; the deploy workflow passes it: -var image=<registry>/challenge-latam-api@sha256:<digest>."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9-]+-docker\\.pkg\\.dev/[a-z0-9-]+/[a-z0-9-]+/challenge-latam-api@sha256:[0-9a-f]{64}$", var.image))
    error_message = "image must be an Artifact Registry image of challenge-latam-api by digest."
  }
}

variable "app_version" {
  description = "Release version for DD_VERSION (defaults to the digest's first 12 characters)."
  type        = string
  default     = null
}

variable "invokers" {
  description = "IAM members allowed to invoke the service besides the read-only CI identity and the uptime check."
  type        = list(string)
  default     = []
}

variable "runbook_base_url" {
  description = "URL prefix of this repository's files for runbook links."
  type        = string
}

variable "page_notification_channels" {
  description = "Cloud Monitoring channel ids that receive pages."
  type        = list(string)
  default     = []
}

variable "ticket_notification_channels" {
  description = "Cloud Monitoring channel ids that receive tickets."
  type        = list(string)
  default     = []
}

variable "enable_datadog" {
  description = "Manage the Datadog dashboards, SLOs and monitors (needs DD_API_KEY and DD_APP_KEY)."
  type        = bool
  default     = true
}

variable "datadog_site" {
  description = "Datadog site."
  type        = string
  default     = "datadoghq.com"
}

variable "datadog_notify" {
  description = "Datadog notification handles by severity."
  type = object({
    page   = list(string)
    ticket = list(string)
  })
  default = { page = [], ticket = [] }
}

variable "enable_edge" {
  description = "HTTPS load balancer with Cloud Armor in front of the service."
  type        = bool
  default     = false
}

variable "edge_domain" {
  description = "Domain of the edge certificate (with enable_edge)."
  type        = string
  default     = null
}

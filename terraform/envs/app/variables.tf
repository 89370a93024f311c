variable "env" {
  description = "Environment: dev or prod."
  type        = string

  validation {
    condition     = contains(["dev", "prod"], var.env)
    error_message = "env must be dev or prod."
  }
}

variable "project_id" {
  description = "Google Cloud project of the environment."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a valid project id."
  }
}

variable "region" {
  description = "Region of Cloud Run (and the edge's serverless NEG)."
  type        = string
  default     = "us-central1"
}

variable "bigquery_location" {
  description = "BigQuery dataset location; null keeps it in var.region, next to Cloud Run, so reads stay local."
  type        = string
  default     = null
}

variable "image" {
  description = "API image by digest; the deploy workflow passes it: -var image=<registry>/challenge-latam-api@sha256:<digest>. Never in a .tfvars file."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9-]+-docker\\.pkg\\.dev/[a-z0-9-]+/[a-z0-9-]+/challenge-latam-api@sha256:[0-9a-f]{64}$", var.image))
    error_message = "image must be an Artifact Registry image of challenge-latam-api by digest."
  }
}

variable "app_version" {
  description = "Release version for DD_VERSION (null: the digest's first 12 characters)."
  type        = string
  default     = null
}

variable "invokers" {
  description = "Further IAM members allowed to invoke the service (client service accounts, groups). Never allUsers."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.invokers : !contains(["allUsers", "allAuthenticatedUsers"], m)])
    error_message = "the service is not public: allUsers and allAuthenticatedUsers may not invoke it."
  }
}

variable "min_instances" {
  description = "Warm instances: 0 scales to zero (dev); prod keeps one so a cold start never lands on the ingest latency SLO."
  type        = number
}

variable "max_instances" {
  description = "Instance ceiling."
  type        = number
}

variable "rate_limit_per_second" {
  description = "RATE_LIMIT_PER_SECOND of the app."
  type        = number
  default     = 50
}

variable "rate_limit_burst" {
  description = "RATE_LIMIT_BURST of the app."
  type        = number
  default     = 100
}

variable "partition_expiration_days" {
  description = "Days a records partition is kept."
  type        = number
}

variable "max_delivery_attempts" {
  description = "Delivery attempts before a record is dead-lettered."
  type        = number
  default     = 10
}

variable "runbook_base_url" {
  description = "URL prefix of repository files, for runbook links (https://github.com/<owner>/<repo>/blob/main)."
  type        = string
}

variable "page_notification_channels" {
  description = "Cloud Monitoring notification channel ids for pages."
  type        = list(string)
  default     = []
}

variable "ticket_notification_channels" {
  description = "Cloud Monitoring notification channel ids for tickets."
  type        = list(string)
  default     = []
}

variable "enable_datadog" {
  description = "Create the Datadog dashboards, SLOs and monitors (needs DD_API_KEY and DD_APP_KEY in the environment of terraform)."
  type        = bool
  default     = true
}

variable "datadog_site" {
  description = "Datadog site of the sidecar."
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
  description = "Put the HTTPS load balancer with Cloud Armor in front of the service (off by default)."
  type        = bool
  default     = false
}

variable "edge_domain" {
  description = "Domain of the edge's certificate (required with enable_edge)."
  type        = string
  default     = null

  validation {
    condition     = var.edge_domain == null || can(regex("^([a-z0-9-]+\\.)+[a-z]{2,}$", coalesce(var.edge_domain, "x.invalid")))
    error_message = "edge_domain must be a DNS name."
  }
}

variable "okta_issuer" {
  description = "Okta authorization server whose access tokens the app accepts (OIDC_ISSUERS), e.g. https://acme.okta.com/oauth2/default; empty for none."
  type        = string
  default     = ""
}

variable "accept_google_id_tokens" {
  description = "Accept Google ID tokens (issuer https://accounts.google.com) for service-to-service calls; the post-deploy suite authenticates with one."
  type        = bool
  default     = true
}

variable "oidc_audience" {
  description = "OIDC_AUDIENCE: the aud of every accepted token (Okta's audience, and the audience Google ID tokens are minted for); empty means challenge-latam-api-<env>."
  type        = string
  default     = ""
}

variable "oidc_scope_map" {
  description = "OIDC_SCOPE_MAP entries beside the post-deploy identity's (added here): Okta groups or service-account emails to scopes, e.g. api-writers=ingest+read."
  type        = string
  default     = ""
}

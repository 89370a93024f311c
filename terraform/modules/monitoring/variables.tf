variable "project_id" {
  description = "Google Cloud project whose Cloud Monitoring holds the dashboards, SLOs and policies."
  type        = string
}

variable "env" {
  description = "Environment: dev or prod (names and labels of every policy)."
  type        = string

  validation {
    condition     = contains(["dev", "prod"], var.env)
    error_message = "env must be dev or prod."
  }
}

variable "service_name" {
  description = "Cloud Run service name; also the Cloud Monitoring service id the SLOs belong to."
  type        = string
}

variable "service_host" {
  description = "Host name of the Cloud Run service (no scheme), the uptime check's target."
  type        = string

  validation {
    condition     = !can(regex("^https?://", var.service_host)) && var.service_host != ""
    error_message = "service_host is a bare host name, without https://."
  }
}

variable "dashboards_dir" {
  description = "Directory of Cloud Monitoring dashboards (dashboards/cloud-monitoring): every *.json, and every *.json.tftpl rendered with project_id and env, becomes one dashboard."
  type        = string
}

variable "slo_files" {
  description = "Generated SLO documents (alerts/cloud-monitoring/*.json)."
  type        = list(string)
}

variable "repo_root" {
  description = "Repository root, to resolve the runbook paths of the SLO documents."
  type        = string
}

variable "runbook_base_url" {
  description = "URL prefix under which repository paths open (for example https://github.com/<owner>/<repo>/blob/main)."
  type        = string

  validation {
    condition     = can(regex("^https://", var.runbook_base_url)) && !endswith(var.runbook_base_url, "/")
    error_message = "runbook_base_url must be an https URL without a trailing slash."
  }
}

variable "subscription_name" {
  description = "Records BigQuery subscription (the pipeline alerts' subject)."
  type        = string
}

variable "dead_letter_subscription_name" {
  description = "Dead-letter BigQuery subscription."
  type        = string
}

variable "oldest_unacked_age_threshold_seconds" {
  description = "Backlog age that pages, in seconds (above the freshness SLO's 60 s, so one slow minute does not page)."
  type        = number
  default     = 300

  validation {
    condition     = var.oldest_unacked_age_threshold_seconds >= 60
    error_message = "oldest_unacked_age_threshold_seconds must be at least the freshness objective, 60."
  }
}

variable "uptime_check_name" {
  description = "Display name of the uptime check."
  type        = string
}

variable "page_notification_channels" {
  description = "Notification channel ids (projects/P/notificationChannels/N) for page-severity policies."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.page_notification_channels : can(regex("^projects/[^/]+/notificationChannels/[^/]+$", c))])
    error_message = "channels must be full ids: projects/P/notificationChannels/N."
  }
}

variable "ticket_notification_channels" {
  description = "Notification channel ids for ticket-severity policies."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.ticket_notification_channels : can(regex("^projects/[^/]+/notificationChannels/[^/]+$", c))])
    error_message = "channels must be full ids: projects/P/notificationChannels/N."
  }
}

variable "project_id" {
  description = "Project of the load balancer."
  type        = string
}

variable "region" {
  description = "Region of the Cloud Run service behind the serverless NEG."
  type        = string
}

variable "name" {
  description = "Name prefix of the edge resources (challenge-latam-edge-<env>)."
  type        = string

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,40}[a-z0-9])?$", var.name))
    error_message = "name must be lowercase letters, digits and hyphens, at most 42 characters."
  }
}

variable "cloud_run_service" {
  description = "Cloud Run service name behind the load balancer."
  type        = string
}

variable "domain" {
  description = "Domain of the Google-managed certificate (its DNS A record points at the output ip_address)."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9-]+\\.)+[a-z]{2,}$", var.domain))
    error_message = "domain must be a DNS name."
  }
}

variable "requests_per_minute_per_ip" {
  description = "Cloud Armor budget per client IP per minute across all instances."
  type        = number
  default     = 6000

  validation {
    condition     = var.requests_per_minute_per_ip >= 1 && var.requests_per_minute_per_ip <= 1000000
    error_message = "requests_per_minute_per_ip must be from 1 to 1,000,000."
  }
}

variable "log_sample_rate" {
  description = "Share of load balancer requests logged (0 to 1)."
  type        = number
  default     = 1

  validation {
    condition     = var.log_sample_rate >= 0 && var.log_sample_rate <= 1
    error_message = "log_sample_rate must be from 0 to 1."
  }
}

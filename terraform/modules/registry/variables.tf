variable "project_id" {
  description = "Project of the shared registry."
  type        = string
}

variable "location" {
  description = "Registry region, for example us-central1 (the same as Cloud Run keeps pulls fast and free)."
  type        = string
}

variable "repository_id" {
  description = "Repository id (challenge-latam-images)."
  type        = string

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$", var.repository_id))
    error_message = "repository_id must be lowercase letters, digits and hyphens."
  }
}

variable "untagged_retention_days" {
  description = "Days before untagged images are deleted."
  type        = number
  default     = 30

  validation {
    condition     = var.untagged_retention_days >= 7
    error_message = "keep untagged images at least 7 days (a rollback may need one)."
  }
}

variable "writers" {
  description = "Members with roles/artifactregistry.writer (the CI build identity only)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.writers : startswith(m, "serviceAccount:")])
    error_message = "writers must be service accounts."
  }
}

variable "readers" {
  description = "Members with roles/artifactregistry.reader (each environment's Cloud Run service agent)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.readers : !contains(["allUsers", "allAuthenticatedUsers"], m)])
    error_message = "the registry is not public."
  }
}

variable "labels" {
  description = "Labels for the repository."
  type        = map(string)
  default     = {}
}

variable "project_id" {
  description = "The shared project (registry and build identity)."
  type        = string
}

variable "region" {
  description = "Region of the registry (the environments' Cloud Run region)."
  type        = string
  default     = "us-central1"
}

variable "github_repository" {
  description = "The repository (owner/name) whose workflows build images."
  type        = string
}

variable "environment_projects" {
  description = "Project ids of dev and prod, whose Cloud Run service agents may pull images."
  type        = list(string)

  validation {
    condition     = length(var.environment_projects) >= 1
    error_message = "list at least one environment project."
  }
}

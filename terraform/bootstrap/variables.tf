variable "env" {
  description = "Environment whose project this bootstraps: dev or prod."
  type        = string

  validation {
    condition     = contains(["dev", "prod"], var.env)
    error_message = "env must be dev or prod."
  }
}

variable "project_id" {
  description = "Project of the environment."
  type        = string
}

variable "region" {
  description = "Default region."
  type        = string
  default     = "us-central1"
}

variable "github_repository" {
  description = "The repository (owner/name) whose workflows may deploy."
  type        = string
}

variable "state_bucket" {
  description = "Name of the state bucket to create (globally unique); later the TF_STATE_BUCKET of the GitHub environments."
  type        = string
}

variable "state_location" {
  description = "Location of the state bucket."
  type        = string
  default     = "US"
}

variable "enable_edge" {
  description = "Give the deployer the compute roles the optional edge module needs."
  type        = bool
  default     = false
}

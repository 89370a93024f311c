variable "github_repository" {
  description = "The one repository whose workflows may authenticate, as owner/name."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "github_repository must be owner/name."
  }
}

variable "allowed_environments" {
  description = "GitHub environments whose jobs may authenticate (empty: not restricted by environment)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for e in var.allowed_environments : can(regex("^[A-Za-z0-9_-]+$", e))])
    error_message = "environment names may hold letters, digits, - and _ only."
  }
}

variable "allowed_refs" {
  description = "Git refs whose jobs (outside an environment) may authenticate, for example refs/heads/main."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for r in var.allowed_refs : startswith(r, "refs/")])
    error_message = "refs must be full refs such as refs/heads/main."
  }
}

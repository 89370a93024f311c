variable "project_id" {
  description = "Project that holds the pool and the service accounts."
  type        = string
}

variable "pool_id" {
  description = "Workload identity pool id."
  type        = string
  default     = "github"

  validation {
    condition     = can(regex("^[a-z0-9-]{4,32}$", var.pool_id))
    error_message = "pool_id must be 4 to 32 characters of [a-z0-9-]."
  }
}

variable "provider_id" {
  description = "Workload identity pool provider id."
  type        = string
  default     = "github"

  validation {
    condition     = can(regex("^[a-z0-9-]{4,32}$", var.provider_id))
    error_message = "provider_id must be 4 to 32 characters of [a-z0-9-]."
  }
}

variable "github_repository" {
  description = "The one repository whose workflows may authenticate, as owner/name."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "github_repository must be owner/name."
  }
}

variable "allowed_environments" {
  description = "GitHub environments whose jobs the provider accepts (empty: any job of the repository). prod lists only prod and prod-readonly."
  type        = list(string)
  default     = []
}

variable "allowed_refs" {
  description = "Git refs whose jobs the provider accepts (empty: any), for example refs/heads/develop."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for r in var.allowed_refs : startswith(r, "refs/")])
    error_message = "refs must be full refs such as refs/heads/main."
  }
}

variable "identities" {
  description = "Service accounts by key: account id, names, the principal that may impersonate it (\"environment:<name>\" or \"repository\"), unavoidable project roles, and whether it mints identity tokens as itself."
  type = map(object({
    account_id     = string
    display_name   = string
    description    = string
    principal      = string
    project_roles  = list(string)
    mint_id_tokens = bool
  }))

  validation {
    condition     = alltrue([for id in values(var.identities) : id.principal == "repository" || can(regex("^environment:[A-Za-z0-9_-]+$", id.principal))])
    error_message = "principal must be \"repository\" or \"environment:<name>\"."
  }

  validation {
    condition     = alltrue([for id in values(var.identities) : !contains(id.project_roles, "roles/owner") && !contains(id.project_roles, "roles/editor")])
    error_message = "no identity gets roles/owner or roles/editor."
  }
}

variable "iam_admin_grantable_roles" {
  description = "For identities granted roles/resourcemanager.projectIamAdmin: the only project roles they may grant or revoke (an IAM condition)."
  type        = map(list(string))
  default     = {}
}

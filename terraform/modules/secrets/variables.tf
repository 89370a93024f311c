variable "project_id" {
  description = "Google Cloud project of the secrets."
  type        = string
}

variable "secrets" {
  description = "Secrets by key: the secret id, what it holds, and the IAM members (\"serviceAccount:...\") that may read its versions."
  type = map(object({
    secret_id = string
    purpose   = string
    readers   = list(string)
  }))

  validation {
    condition     = alltrue([for s in values(var.secrets) : can(regex("^[A-Za-z0-9_-]{1,255}$", s.secret_id))])
    error_message = "secret ids may hold letters, digits, - and _ only."
  }

  validation {
    condition     = alltrue(flatten([for s in values(var.secrets) : [for m in s.readers : can(regex("^(serviceAccount|group|user):", m))]]))
    error_message = "readers must be IAM members such as serviceAccount:..., never allUsers or allAuthenticatedUsers."
  }
}

variable "labels" {
  description = "Labels for the secrets."
  type        = map(string)
  default     = {}
}

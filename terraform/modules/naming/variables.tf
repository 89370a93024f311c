variable "env" {
  description = "Environment the names are for: dev or prod (the contract's `<env>`)."
  type        = string

  validation {
    condition     = contains(["dev", "prod"], var.env)
    error_message = "env must be dev or prod."
  }
}

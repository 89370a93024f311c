variable "directory" {
  description = "Directory of dashboard files (*.json, and *.json.tftpl rendered with template_vars)."
  type        = string
}

variable "template_vars" {
  description = "Variables of the *.json.tftpl templates (project_id and env for Cloud Monitoring)."
  type        = map(string)
  default     = {}
}

variable "required_keys" {
  description = "Top-level keys every dashboard document must have (displayName for Cloud Monitoring; title, layout_type, widgets for Datadog)."
  type        = list(string)

  validation {
    condition     = length(var.required_keys) > 0
    error_message = "name at least one required key, or a wrong file would pass."
  }
}

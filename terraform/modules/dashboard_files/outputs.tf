output "dashboards" {
  description = "Rendered dashboard JSON by file name (a template's name without .tftpl)."
  value       = local.rendered

  precondition {
    condition     = alltrue([for f, body in local.rendered : can(jsondecode(body))])
    error_message = "every dashboard must be a JSON document after rendering."
  }

  precondition {
    condition     = alltrue([for f, body in local.rendered : alltrue([for k in var.required_keys : can(jsondecode(body)[k])])])
    error_message = "every dashboard must carry the required top-level keys (${join(", ", var.required_keys)})."
  }
}

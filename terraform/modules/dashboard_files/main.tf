# The dashboards of one directory, rendered: every *.json as it is, every *.json.tftpl through
# templatefile() with the given variables (dashboards/README.md: the Cloud Monitoring SLO
# dashboard names each SLO with its project and environment). No provider, so `terraform test`
# renders the repository's real dashboards with Terraform's own functions and checks each is a
# dashboard document before any apply.

terraform {
  required_version = ">= 1.9"
}

locals {
  plain     = { for f in fileset(var.directory, "*.json") : f => file("${var.directory}/${f}") }
  templated = { for f in fileset(var.directory, "*.json.tftpl") : trimsuffix(f, ".tftpl") => templatefile("${var.directory}/${f}", var.template_vars) }
  rendered  = merge(local.plain, local.templated)
}

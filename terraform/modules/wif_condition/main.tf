# The attribute condition of a GitHub Workload Identity provider, computed without a provider so
# that `terraform test` (tests/condition.tftest.hcl) pins the exact expression: the repository,
# and when given, the exact subject claims allowed. GitHub's default subject claim binds
# repository and context: repo:<owner>/<name>:environment:<env> for jobs in an environment,
# repo:<owner>/<name>:ref:<ref> for jobs outside one.

terraform {
  required_version = ">= 1.9"
}

locals {
  subjects = concat(
    [for e in var.allowed_environments : "repo:${var.github_repository}:environment:${e}"],
    [for r in var.allowed_refs : "repo:${var.github_repository}:ref:${r}"],
  )

  repository = "assertion.repository == '${var.github_repository}'"
  condition = (length(local.subjects) == 0
    ? local.repository
    : "${local.repository} && (${join(" || ", [for s in local.subjects : "assertion.sub == '${s}'"])})"
  )
}

# Workload Identity Federation for GitHub Actions, limited to this repository, and the service
# accounts the workflows impersonate. No keys exist: a job trades its GitHub OIDC token for a
# short-lived Google token, and only the principals named here may do so.
#
# Each identity is bound to one principal set:
#   environment:<name>  jobs that run in that GitHub environment (prod's needs reviewers), or
#   repository          any job of the repository that passes the provider's condition (the
#                       build identity, whose provider also restricts the ref).

terraform {
  required_version = ">= 1.9"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.14, < 8.0"
    }
  }
}

module "condition" {
  source = "../wif_condition"

  github_repository    = var.github_repository
  allowed_environments = var.allowed_environments
  allowed_refs         = var.allowed_refs
}

resource "google_iam_workload_identity_pool" "github" {
  project                   = var.project_id
  workload_identity_pool_id = var.pool_id
  display_name              = "GitHub Actions"
  description               = "GitHub Actions of ${var.github_repository}"
}

resource "google_iam_workload_identity_pool_provider" "github" {
  project                            = var.project_id
  workload_identity_pool_id          = google_iam_workload_identity_pool.github.workload_identity_pool_id
  workload_identity_pool_provider_id = var.provider_id
  display_name                       = "GitHub OIDC"

  # Tokens of any other repository, or of any subject not listed, are refused outright.
  attribute_condition = module.condition.attribute_condition
  #checkov:skip=CKV_GCP_125:The condition is computed by modules/wif_condition (exact assertion.sub claims per environment or ref), which checkov cannot evaluate; its terraform test pins the expression

  attribute_mapping = {
    "google.subject"         = "assertion.sub"
    "attribute.repository"   = "assertion.repository"
    "attribute.environment"  = "assertion.environment"
    "attribute.ref"          = "assertion.ref"
    "attribute.workflow_ref" = "assertion.workflow_ref"
  }

  oidc {
    issuer_uri = "https://token.actions.githubusercontent.com"
  }
}

resource "google_service_account" "this" {
  for_each = var.identities

  project      = var.project_id
  account_id   = each.value.account_id
  display_name = each.value.display_name
  description  = each.value.description
}

locals {
  principal = {
    for k, id in var.identities : k => (
      startswith(id.principal, "environment:")
      ? "principalSet://iam.googleapis.com/${google_iam_workload_identity_pool.github.name}/attribute.environment/${trimprefix(id.principal, "environment:")}"
      : "principalSet://iam.googleapis.com/${google_iam_workload_identity_pool.github.name}/attribute.repository/${var.github_repository}"
    )
  }

  project_grants = merge([
    for k, id in var.identities : {
      for role in id.project_roles : "${k}/${role}" => { identity = k, role = role }
    }
  ]...)
}

resource "google_service_account_iam_member" "workload_identity_user" {
  for_each = var.identities

  service_account_id = google_service_account.this[each.key].name
  role               = "roles/iam.workloadIdentityUser"
  member             = local.principal[each.key]
}

# The verify job mints an identity token for the Cloud Run URL as itself.
resource "google_service_account_iam_member" "self_token_creator" {
  for_each = { for k, id in var.identities : k => id if id.mint_id_tokens }

  service_account_id = google_service_account.this[each.key].name
  role               = "roles/iam.serviceAccountOpenIdTokenCreator"
  member             = google_service_account.this[each.key].member
}

# Project-level roles, unavoidable for identities that create resources of many kinds (a
# deployer running Terraform) or plan over all of them (viewer). tests/terraform pins the exact
# list per identity; everything narrower is granted on the resource elsewhere.
resource "google_project_iam_member" "identity" {
  for_each = local.project_grants

  project = var.project_id
  role    = each.value.role
  member  = google_service_account.this[each.value.identity].member

  dynamic "condition" {
    for_each = lookup(var.iam_admin_grantable_roles, each.value.identity, null) != null && each.value.role == "roles/resourcemanager.projectIamAdmin" ? [var.iam_admin_grantable_roles[each.value.identity]] : []
    content {
      title       = "only-listed-roles"
      description = "May grant or revoke only these project roles: ${join(", ", condition.value)}"
      expression  = "api.getAttribute('iam.googleapis.com/modifiedGrantsByRole', []).hasOnly([${join(", ", [for r in condition.value : "'${r}'"])}])"
    }
  }

  lifecycle {
    precondition {
      condition     = each.value.role != "roles/resourcemanager.projectIamAdmin" || lookup(var.iam_admin_grantable_roles, each.value.identity, null) != null
      error_message = "projectIamAdmin is granted only with a condition listing the roles it may grant (iam_admin_grantable_roles)."
    }
  }
}

# Secret Manager: the secrets exist here, their values never do. Terraform creates each secret
# (name, replication, labels) and who may read it; versions are added out of band with gcloud
# (terraform/README.md, "Secrets"), so no key ever lands in the Terraform state or the plan.

terraform {
  required_version = ">= 1.9"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.14, < 8.0"
    }
  }
}

resource "google_secret_manager_secret" "this" {
  for_each = var.secrets

  project   = var.project_id
  secret_id = each.value.secret_id
  labels    = var.labels

  annotations = {
    purpose = each.value.purpose
  }

  replication {
    auto {}
  }
}

locals {
  # One grant per (secret, reader): roles/secretmanager.secretAccessor on that secret only.
  grants = merge([
    for key, s in var.secrets : {
      for member in s.readers : "${key}/${member}" => { secret = key, member = member }
    }
  ]...)
}

resource "google_secret_manager_secret_iam_member" "reader" {
  for_each = local.grants

  project   = var.project_id
  secret_id = google_secret_manager_secret.this[each.value.secret].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value.member
}

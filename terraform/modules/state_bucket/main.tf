# The GCS bucket of one environment's Terraform state: versioned (a bad apply's state can be
# restored), uniform bucket-level access and public access prevention enforced, and readable
# only by that environment's identities.

terraform {
  required_version = ">= 1.9"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.14, < 8.0"
    }
  }
}

resource "google_storage_bucket" "state" {
  project  = var.project_id
  name     = var.bucket_name
  location = var.location
  labels   = var.labels

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  versioning {
    enabled = true
  }

  # Old state versions are kept for a while, then pruned.
  lifecycle_rule {
    condition {
      num_newer_versions = var.noncurrent_versions_kept
      with_state         = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  #checkov:skip=CKV_GCP_62:Access logs of the state bucket come from Cloud Audit Logs (data access), not a second logging bucket
}

resource "google_storage_bucket_iam_member" "writer" {
  for_each = toset(var.writers)

  bucket = google_storage_bucket.state.name
  role   = "roles/storage.objectAdmin"
  member = each.value
}

resource "google_storage_bucket_iam_member" "reader" {
  for_each = toset(var.readers)

  bucket = google_storage_bucket.state.name
  role   = "roles/storage.objectViewer"
  member = each.value
}

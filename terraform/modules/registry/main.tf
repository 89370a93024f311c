# Artifact Registry: the one Docker repository every environment pulls from (prod runs the bytes
# dev tested, by digest). Tags are immutable, so a version tag can never move to other bytes.

terraform {
  required_version = ">= 1.9"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.14, < 8.0"
    }
  }
}

resource "google_artifact_registry_repository" "images" {
  project       = var.project_id
  location      = var.location
  repository_id = var.repository_id
  format        = "DOCKER"
  description   = "challenge-latam-api images, pushed by CI (sha-<commit>, vX.Y.Z) and deployed by digest."
  labels        = var.labels

  docker_config {
    immutable_tags = true
  }

  # Untagged images (superseded builds) go after this many days; tagged releases stay.
  cleanup_policies {
    id     = "delete-untagged"
    action = "DELETE"
    condition {
      tag_state  = "UNTAGGED"
      older_than = "${var.untagged_retention_days * 86400}s"
    }
  }

  #checkov:skip=CKV_GCP_84:Google-managed encryption; a CMEK key ring is an organisation-level decision outside this service (terraform/README.md)
}

resource "google_artifact_registry_repository_iam_member" "writer" {
  for_each = toset(var.writers)

  project    = var.project_id
  location   = var.location
  repository = google_artifact_registry_repository.images.repository_id
  role       = "roles/artifactregistry.writer"
  member     = each.value
}

# The Cloud Run service agents of the environment projects pull the image.
resource "google_artifact_registry_repository_iam_member" "reader" {
  for_each = toset(var.readers)

  project    = var.project_id
  location   = var.location
  repository = google_artifact_registry_repository.images.repository_id
  role       = "roles/artifactregistry.reader"
  member     = each.value
}

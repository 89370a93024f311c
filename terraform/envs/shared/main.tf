# The shared project: the Artifact Registry repository every environment pulls from, and the
# build identity that pushes to it. Applied by a project owner (terraform/README.md); the build
# identity can push images and nothing else.

terraform {
  required_version = ">= 1.9"

  backend "gcs" {
    prefix = "challenge-latam-api/shared"
  }

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.14, < 8.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

data "google_project" "env" {
  for_each   = toset(var.environment_projects)
  project_id = each.value
}

module "wif" {
  source = "../../modules/github_wif"

  project_id        = var.project_id
  github_repository = var.github_repository
  # Images are built from develop (dev delivery) and main (promotion resolves tags) only.
  allowed_refs = ["refs/heads/develop", "refs/heads/main"]

  identities = {
    build = {
      account_id     = "challenge-latam-ci-build"
      display_name   = "challenge-latam CI build"
      description    = "Pushes and tags challenge-latam-api images; nothing else."
      principal      = "repository"
      project_roles  = []
      mint_id_tokens = false
    }
  }
}

module "registry" {
  source = "../../modules/registry"

  project_id    = var.project_id
  location      = var.region
  repository_id = "challenge-latam-images"
  writers       = [module.wif.members["build"]]
  # Each environment's Cloud Run service agent pulls the image by digest.
  readers = [for p in data.google_project.env : "serviceAccount:service-${p.number}@serverless-robot-prod.iam.gserviceaccount.com"]
  labels = {
    service    = "challenge-latam-api"
    managed-by = "terraform"
  }
}

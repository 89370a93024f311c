# Bootstrap of one environment's project, applied once by a project owner (terraform/README.md):
# the APIs, the versioned state bucket, Workload Identity Federation for this repository, and
# the two identities GitHub Actions use there (the deployer and the read-only planner). The
# deployer then applies terraform/envs/app with <env>.tfvars from the workflows; it cannot widen
# its own roles.
#
# State: the bucket is created first with gcloud (terraform/README.md, "Bootstrap"), because the
# state of this very configuration lives in it; the import block below then adopts it, and the
# state_bucket module holds it to the same settings (versioned, uniform access, no public access).

terraform {
  required_version = ">= 1.9"

  backend "gcs" {}

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

module "names" {
  source = "../modules/naming"
  env    = var.env
}

locals {
  apis = [
    "artifactregistry.googleapis.com",
    "bigquery.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "compute.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "serviceusage.googleapis.com",
    "sts.googleapis.com",
  ]

  # What the deployer needs to create and change everything terraform/envs/app manages.
  # Project-level because Terraform creates resources of these kinds (a resource cannot be
  # granted on before it exists). tests/terraform/test_iam.py pins this list exactly.
  deployer_roles = concat([
    "roles/bigquery.dataOwner",
    "roles/iam.serviceAccountAdmin",
    "roles/monitoring.editor",
    "roles/pubsub.admin",
    "roles/resourcemanager.projectIamAdmin",
    "roles/run.admin",
    "roles/secretmanager.admin",
    "roles/serviceusage.serviceUsageConsumer",
  ], var.enable_edge ? ["roles/compute.loadBalancerAdmin", "roles/compute.securityAdmin"] : [])

  # The plan identity reads everything, including IAM policies, and changes nothing.
  readonly_roles = [
    "roles/iam.securityReviewer",
    "roles/viewer",
  ]
}

resource "google_project_service" "this" {
  for_each = toset(local.apis)

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

module "wif" {
  source = "../modules/github_wif"

  project_id        = var.project_id
  github_repository = var.github_repository
  # Only jobs of this environment's two GitHub environments get a token here: prod's deployer
  # is reachable only through the protected `prod` environment (required reviewers).
  allowed_environments = [var.env, "${var.env}-readonly"]

  identities = {
    deployer = {
      account_id     = module.names.service_accounts.deployer
      display_name   = "challenge-latam deployer (${var.env})"
      description    = "Applies terraform/envs/app with ${var.env}.tfvars from the GitHub environment ${var.env}."
      principal      = "environment:${var.env}"
      project_roles  = local.deployer_roles
      mint_id_tokens = false
    }
    readonly = {
      account_id     = module.names.service_accounts.readonly
      display_name   = "challenge-latam read-only (${var.env})"
      description    = "Plans terraform/envs/app with ${var.env}.tfvars, invokes the service and reads the test key, from ${var.env}-readonly."
      principal      = "environment:${var.env}-readonly"
      project_roles  = local.readonly_roles
      mint_id_tokens = true
    }
  }

  # The deployer grants the runtime identity its two project roles, and nothing else.
  iam_admin_grantable_roles = {
    deployer = ["roles/bigquery.jobUser", "roles/monitoring.metricWriter"]
  }

  depends_on = [google_project_service.this]
}

import {
  to = module.state.google_storage_bucket.state
  id = var.state_bucket
}

module "state" {
  source = "../modules/state_bucket"

  project_id  = var.project_id
  bucket_name = var.state_bucket
  location    = var.state_location
  writers     = [module.wif.members["deployer"]]
  readers     = [module.wif.members["readonly"]]
  labels      = module.names.labels
}

# The dev environment: the stack module with dev's values. State lives in GCS; the bucket is
# given at init (terraform init -backend-config=bucket=<TF_STATE_BUCKET>), never written here.
# Bootstrap first (terraform/README.md), then: terraform plan -var image=<registry>/challenge-latam-api@sha256:<digest>

terraform {
  required_version = ">= 1.9"

  backend "gcs" {
    prefix = "challenge-latam-api/dev"
  }

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.14, < 8.0"
    }
    datadog = {
      source  = "DataDog/datadog"
      version = ">= 3.40, < 5.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region

  default_labels = {
    service     = "challenge-latam-api"
    environment = "dev"
  }
}

# Keys come from DD_API_KEY and DD_APP_KEY in terraform's environment, never from a file here.
provider "datadog" {
  api_url  = "https://api.${var.datadog_site}/"
  validate = var.enable_datadog ? "true" : "false"
}

locals {
  # The identities the bootstrap created (terraform/bootstrap), by their fixed names.
  deployer = "challenge-latam-deploy-dev@${var.project_id}.iam.gserviceaccount.com"
  readonly = "challenge-latam-ro-dev@${var.project_id}.iam.gserviceaccount.com"
}

module "stack" {
  source = "../../modules/stack"

  env               = "dev"
  project_id        = var.project_id
  region            = var.region
  bigquery_location = var.region
  repo_root         = "${path.root}/../../.."

  image = var.image
  # The digest's first 12 hex characters name the version when no release tag is known.
  app_version = coalesce(var.app_version, substr(split("@sha256:", var.image)[1], 0, 12))

  deployer_service_account = local.deployer
  readonly_service_account = local.readonly
  invokers                 = var.invokers

  # dev scales to zero: nobody pays for idle instances; the first request after idle takes a cold start.
  min_instances = 0
  max_instances = 3

  partition_expiration_days = 30
  runbook_base_url          = var.runbook_base_url

  page_notification_channels   = var.page_notification_channels
  ticket_notification_channels = var.ticket_notification_channels
  enable_datadog               = var.enable_datadog
  datadog_site                 = var.datadog_site
  datadog_notify               = var.datadog_notify

  enable_edge = var.enable_edge
  edge_domain = var.edge_domain
}

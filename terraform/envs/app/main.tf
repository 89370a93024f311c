# The service's one composition: every environment (dev, prod) is this root with its own values.
#
#   dev.tfvars / prod.tfvars             what differs between the environments (project, scaling,
#                                        retention, runbook branch); everything else is a default here
#   dev.backend.hcl / prod.backend.hcl   where each environment's state lives (GCS prefix); the
#                                        bucket is given at init, never written in the repository
#
#   terraform -chdir=terraform/envs/app init -backend-config=dev.backend.hcl -backend-config=bucket=<TF_STATE_BUCKET>
#   terraform -chdir=terraform/envs/app plan -var-file=dev.tfvars -var image=<registry>/challenge-latam-api@sha256:<digest>
#
# A new input of the environment is one variable in variables.tf, used below, plus its value in
# the .tfvars files when it differs from the default. Bootstrap first (terraform/README.md).
#
# Data path: app -> topic -> BigQuery subscription -> records table (dead letters -> their own
# topic -> BigQuery subscription -> dead-letter table). Observability: Datadog (traces and logs
# through the serverless-init sidecar; SLOs and monitors) and Cloud Monitoring (Prometheus
# metrics through the GMP sidecar; SLOs, burn-rate policies, pipeline alerts, uptime check).

terraform {
  required_version = ">= 1.9"

  # Partial configuration: the prefix comes from <env>.backend.hcl and the bucket from
  # -backend-config=bucket=... (the TF_STATE_BUCKET of the environment).
  backend "gcs" {}

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
    environment = var.env
  }
}

# Keys come from DD_API_KEY and DD_APP_KEY in terraform's environment, never from a file here.
provider "datadog" {
  api_url  = "https://api.${var.datadog_site}/"
  validate = var.enable_datadog ? "true" : "false"
}

module "names" {
  source = "../../modules/naming"
  env    = var.env
}

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  names  = module.names.names
  bq     = module.names.bigquery
  labels = module.names.labels

  # Signs the uptime check's identity token; it must be allowed to invoke the service.
  uptime_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-monitoring-notification.iam.gserviceaccount.com"

  # The identities the bootstrap created (terraform/bootstrap), by the names the naming module
  # gives them: the deployer applies this root, the read-only identity plans it and runs the
  # post-deploy tests.
  deployer_member = "serviceAccount:${module.names.service_accounts.deployer}@${var.project_id}.iam.gserviceaccount.com"
  readonly_member = "serviceAccount:${module.names.service_accounts.readonly}@${var.project_id}.iam.gserviceaccount.com"

  # Bearer JWTs beside API keys (docs/oidc.md). The post-deploy suite runs as the read-only
  # identity and authenticates with its Google ID token for this audience (deploy.yml mints
  # it for challenge-latam-api-<env>), with the scopes its test API key has.
  oidc_issuers = compact([
    var.okta_issuer,
    var.accept_google_id_tokens ? "https://accounts.google.com" : "",
  ])
  oidc_audience = var.oidc_audience != "" ? var.oidc_audience : "challenge-latam-api-${var.env}"
  oidc_scope_map = join(",", compact([
    var.oidc_scope_map,
    # Qualified by the issuer: only Google's tokens can claim this email.
    var.accept_google_id_tokens ? "https://accounts.google.com#${module.names.service_accounts.readonly}@${var.project_id}.iam.gserviceaccount.com=ingest+read" : "",
  ]))

  # schema/, dashboards/ and alerts/ are read from the repository this root lives in.
  repo_root = "${path.root}/../../.."

  # BigQuery next to Cloud Run unless an environment says otherwise: reads stay in the region.
  bigquery_location = coalesce(var.bigquery_location, var.region)

  # The digest's first 12 hex characters name the version when no release tag is known.
  app_version = coalesce(var.app_version, substr(split("@sha256:", var.image)[1], 0, 12))
}

module "bigquery" {
  source = "../../modules/bigquery"

  project_id                = var.project_id
  env                       = var.env
  location                  = local.bigquery_location
  dataset_id                = local.bq.dataset
  table_id                  = local.bq.table
  dead_letter_table_id      = local.bq.dead_letter_table
  records_schema_file       = "${local.repo_root}/schema/records.bigquery.json"
  dead_letter_schema_file   = "${local.repo_root}/schema/dead_letters.bigquery.json"
  partition_expiration_days = var.partition_expiration_days
  labels                    = local.labels
}

module "pubsub" {
  source = "../../modules/pubsub"

  project_id                    = var.project_id
  topic_name                    = local.names.topic
  subscription_name             = local.names.subscription
  dead_letter_topic_name        = local.names.dead_letter_topic
  dead_letter_subscription_name = local.names.dead_letter_sub
  records_table                 = module.bigquery.records_table
  dead_letter_table             = module.bigquery.dead_letter_table
  records_table_ref             = module.bigquery.records_table_ref
  dead_letter_table_ref         = module.bigquery.dead_letter_table_ref
  max_delivery_attempts         = var.max_delivery_attempts
  labels                        = local.labels
}

module "secrets" {
  source = "../../modules/secrets"

  project_id = var.project_id
  labels     = local.labels
  secrets = {
    # The runtime identity's access to these two is granted by the cloud_run module, which owns it.
    api_keys = {
      secret_id = local.names.api_keys_secret
      purpose   = "API_KEYS_FILE of the service: JSON list of {id, sha256, scopes}"
      readers   = []
    }
    # Also read by the deploy and plan identities: the workflows export it as DD_API_KEY for the
    # Datadog provider, with the application key below.
    datadog_api_key = {
      secret_id = local.names.datadog_api_key_secret
      purpose   = "DD_API_KEY of the Datadog serverless-init sidecar and of the Datadog Terraform provider"
      readers   = [local.deployer_member, local.readonly_member]
    }
    datadog_app_key = {
      secret_id = local.names.datadog_app_key_secret
      purpose   = "DD_APP_KEY of the Datadog Terraform provider (dashboards, SLOs, monitors)"
      readers   = [local.deployer_member, local.readonly_member]
    }
    test_api_key = {
      secret_id = local.names.test_api_key_secret
      purpose   = "API key (ingest, read) of the post-deploy tests; its SHA-256 is in api_keys"
      readers   = [local.readonly_member]
    }
  }
}

module "cloud_run" {
  source = "../../modules/cloud_run"

  project_id                = var.project_id
  region                    = var.region
  env                       = var.env
  service_name              = local.names.service
  runtime_account_id        = module.names.service_accounts.runtime
  image                     = var.image
  app_version               = local.app_version
  topic_name                = module.pubsub.topic_name
  dataset_id                = module.bigquery.dataset_id
  table_id                  = module.bigquery.table_id
  api_keys_secret_id        = module.secrets.secret_ids["api_keys"]
  datadog_api_key_secret_id = module.secrets.secret_ids["datadog_api_key"]
  gmp_config_secret_id      = local.names.gmp_config_secret
  datadog_site              = var.datadog_site
  min_instances             = var.min_instances
  max_instances             = var.max_instances
  rate_limit_per_second     = var.rate_limit_per_second
  rate_limit_burst          = var.rate_limit_burst
  oidc_issuers              = local.oidc_issuers
  oidc_audience             = length(local.oidc_issuers) > 0 ? local.oidc_audience : ""
  oidc_scope_map            = local.oidc_scope_map
  ingress                   = var.enable_edge ? "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER" : "INGRESS_TRAFFIC_ALL"
  invokers                  = distinct(concat(var.invokers, [local.readonly_member, local.uptime_agent]))
  deployer_members          = [local.deployer_member]
  config_readers            = [local.readonly_member]
  labels                    = local.labels
}

module "monitoring" {
  source = "../../modules/monitoring"

  project_id                    = var.project_id
  env                           = var.env
  service_name                  = module.cloud_run.service_name
  service_host                  = module.cloud_run.host
  dashboards_dir                = "${local.repo_root}/dashboards/cloud-monitoring"
  slo_files                     = [for f in fileset("${local.repo_root}/alerts/cloud-monitoring", "*.json") : "${local.repo_root}/alerts/cloud-monitoring/${f}"]
  repo_root                     = local.repo_root
  runbook_base_url              = var.runbook_base_url
  subscription_name             = module.pubsub.subscription_name
  dead_letter_subscription_name = module.pubsub.dead_letter_subscription_name
  uptime_check_name             = local.names.uptime_check
  page_notification_channels    = var.page_notification_channels
  ticket_notification_channels  = var.ticket_notification_channels
}

module "datadog" {
  source = "../../modules/datadog"
  count  = var.enable_datadog ? 1 : 0

  env              = var.env
  project_id       = var.project_id
  dashboards_dir   = "${local.repo_root}/dashboards/datadog"
  slo_files        = [for f in fileset("${local.repo_root}/alerts/datadog", "*.json") : "${local.repo_root}/alerts/datadog/${f}"]
  repo_root        = local.repo_root
  runbook_base_url = var.runbook_base_url
  notify           = var.datadog_notify
}

module "edge" {
  source = "../../modules/edge"
  count  = var.enable_edge ? 1 : 0

  project_id        = var.project_id
  region            = var.region
  name              = local.names.edge
  cloud_run_service = module.cloud_run.service_name
  domain            = var.edge_domain
}

# --- State moved from the former per-environment roots ----------------------------------------
# The former per-environment roots called this composition as module "stack"; it is the root
# now, so every resource drops the module.stack prefix. The GCS prefixes (<env>.backend.hcl) are
# unchanged, so the first plan after the move shows these moves and no replacement.

moved {
  from = module.stack.module.bigquery
  to   = module.bigquery
}

moved {
  from = module.stack.module.pubsub
  to   = module.pubsub
}

moved {
  from = module.stack.module.secrets
  to   = module.secrets
}

moved {
  from = module.stack.module.cloud_run
  to   = module.cloud_run
}

moved {
  from = module.stack.module.monitoring
  to   = module.monitoring
}

moved {
  from = module.stack.module.datadog
  to   = module.datadog
}

moved {
  from = module.stack.module.edge
  to   = module.edge
}

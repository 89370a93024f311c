# Names of every resource of one environment, computed in one place so that the contract's
# convention (`challenge-latam-<resource>-<env>`, BigQuery ids with underscores) is written once
# and tested (tests/naming.tftest.hcl). No provider: `terraform test` runs it offline.

terraform {
  required_version = ">= 1.9"
}

locals {
  prefix = "challenge-latam"

  # Hyphenated names (Pub/Sub, Cloud Run, service accounts, secrets, buckets).
  hyphen = {
    service                = "${local.prefix}-api-${var.env}"
    topic                  = "${local.prefix}-records-${var.env}"
    subscription           = "${local.prefix}-records-bq-${var.env}"
    dead_letter_topic      = "${local.prefix}-records-dead-letter-${var.env}"
    dead_letter_sub        = "${local.prefix}-records-dead-letter-bq-${var.env}"
    api_keys_secret        = "${local.prefix}-api-keys-${var.env}"
    datadog_api_key_secret = "${local.prefix}-datadog-api-key-${var.env}"
    datadog_app_key_secret = "${local.prefix}-datadog-app-key-${var.env}"
    gmp_config_secret      = "${local.prefix}-gmp-config-${var.env}"
    test_api_key_secret    = "${local.prefix}-test-api-key-${var.env}"
    uptime_check           = "${local.prefix}-api-uptime-${var.env}"
    edge                   = "${local.prefix}-edge-${var.env}"
  }

  # Service account ids: 6 to 30 characters, so they drop the common prefix's second word.
  service_accounts = {
    runtime  = "challenge-latam-run-${var.env}"
    deployer = "challenge-latam-deploy-${var.env}"
    readonly = "challenge-latam-ro-${var.env}"
  }

  # BigQuery ids cannot hold hyphens.
  bigquery = {
    dataset           = "challenge_latam_data_${var.env}"
    table             = "challenge_latam_records_${var.env}"
    dead_letter_table = "challenge_latam_dead_letters_${var.env}"
  }

  labels = {
    service     = "challenge-latam-api"
    environment = var.env
    managed-by  = "terraform"
  }
}

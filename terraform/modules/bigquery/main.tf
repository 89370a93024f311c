# BigQuery: the dataset, the records table the Pub/Sub BigQuery subscription writes and
# getData reads, and the dead-letter table. Both tables take their columns from the single
# schema files in schema/ (the same files the embedded store and the emulator tests use), so a
# column cannot exist in one place and not the other.

terraform {
  required_version = ">= 1.9"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.14, < 8.0"
    }
  }
}

resource "google_bigquery_dataset" "this" {
  project       = var.project_id
  dataset_id    = var.dataset_id
  location      = var.location
  description   = "challenge-latam-api records (${var.env}): written by the Pub/Sub BigQuery subscription, read by getData."
  labels        = var.labels
  friendly_name = var.dataset_id

  # Rows expire with their partition (the tables set it); nothing expires whole tables.
  delete_contents_on_destroy = false

  # Customer-managed keys are a per-organisation decision; Google-managed encryption applies.
  #checkov:skip=CKV_GCP_81:Google-managed encryption at rest; a CMEK key ring is an organisation-level decision outside this service (terraform/README.md)
}

resource "google_bigquery_table" "records" {
  project     = var.project_id
  dataset_id  = google_bigquery_dataset.this.dataset_id
  table_id    = var.table_id
  description = "One row per ingested record plus the subscription's metadata (CONTRACT.md, record schema)."
  labels      = var.labels
  schema      = file(var.records_schema_file)

  # getData always filters on publish_time (default window 7 days), so daily partitions keep
  # every query to the days it asks for, and require_partition_filter refuses a full scan.
  time_partitioning {
    type          = "DAY"
    field         = "publish_time"
    expiration_ms = var.partition_expiration_days * 86400000
  }
  require_partition_filter = true

  # getData filters by customerId; clustering prunes blocks inside each partition.
  clustering = ["customerId"]

  deletion_protection = var.deletion_protection

  #checkov:skip=CKV_GCP_80:Google-managed encryption at rest; a CMEK key ring is an organisation-level decision outside this service (terraform/README.md)
}

resource "google_bigquery_table" "dead_letters" {
  project     = var.project_id
  dataset_id  = google_bigquery_dataset.this.dataset_id
  table_id    = var.dead_letter_table_id
  description = "Messages Pub/Sub gave up delivering to the records table, as published, for inspection and replay."
  labels      = var.labels
  schema      = file(var.dead_letter_schema_file)

  time_partitioning {
    type          = "DAY"
    field         = "publish_time"
    expiration_ms = var.dead_letter_expiration_days * 86400000
  }
  require_partition_filter = true

  deletion_protection = var.deletion_protection

  #checkov:skip=CKV_GCP_80:Google-managed encryption at rest; a CMEK key ring is an organisation-level decision outside this service (terraform/README.md)
}

# Pub/Sub: the records topic, the native BigQuery subscription that writes every message into
# the records table (production's default path: no worker to run), the dead-letter topic, and a
# second BigQuery subscription that lands dead letters in their own table for inspection.
# IAM here is for the Pub/Sub service agent only, each grant on the one topic, subscription or
# table it needs: nothing project-wide.

terraform {
  required_version = ">= 1.9"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.14, < 8.0"
    }
  }
}

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  # Google creates this agent when the Pub/Sub API is enabled; it performs the BigQuery writes
  # and the dead-letter forwarding of every subscription in the project.
  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_pubsub_topic" "records" {
  project = var.project_id
  name    = var.topic_name
  labels  = var.labels

  # Published messages stay on the topic this long, so a subscription can be seeked back to
  # replay them into BigQuery after a table incident.
  message_retention_duration = var.topic_retention

  #checkov:skip=CKV_GCP_83:Google-managed encryption; a CMEK key ring is an organisation-level decision outside this service (terraform/README.md)
}

resource "google_pubsub_topic" "dead_letter" {
  project                    = var.project_id
  name                       = var.dead_letter_topic_name
  labels                     = var.labels
  message_retention_duration = var.topic_retention

  #checkov:skip=CKV_GCP_83:Google-managed encryption; a CMEK key ring is an organisation-level decision outside this service (terraform/README.md)
}

resource "google_pubsub_subscription" "records_bigquery" {
  project = var.project_id
  name    = var.subscription_name
  topic   = google_pubsub_topic.records.id
  labels  = var.labels

  bigquery_config {
    table = var.records_table
    # Message JSON fields map to the table's columns (schema/records.bigquery.json); the API
    # rejects unknown fields (422), so nothing that reaches the topic lacks a column.
    use_table_schema = true
    # subscription_name, message_id, publish_time and attributes: getData returns messageId and
    # publishTime, deduplicates on message_id, and publish_time is the partitioning column.
    write_metadata      = true
    drop_unknown_fields = false
  }

  # A message BigQuery keeps refusing (a row the table rejects) goes to the dead-letter topic
  # after this many attempts instead of blocking nothing but retrying forever.
  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  # A failed write (a BigQuery outage included) is a nack, and every redelivery spends an
  # attempt: the backoff spreads the attempts so that an outage of minutes dead-letters nothing.
  # With the defaults (10s doubling to 300s, 10 attempts) a message is dead-lettered only after
  # failing for about 25 minutes (10+20+40+80+160+4x300 s); tests/terraform checks >= 15 min.
  retry_policy {
    minimum_backoff = var.retry_minimum_backoff
    maximum_backoff = var.retry_maximum_backoff
  }

  # Unacked messages survive a BigQuery outage this long; the oldest-unacked-age alert fires
  # long before (monitoring module).
  message_retention_duration = var.subscription_retention

  expiration_policy {
    ttl = "" # never expire for inactivity
  }

  depends_on = [
    google_bigquery_table_iam_member.agent_writes_records,
    google_pubsub_topic_iam_member.agent_publishes_dead_letters,
  ]
}

# The dead-letter sink. It has no dead-letter policy of its own, by design: a message that
# cannot be written here has nowhere further to go, so it stays on this subscription (retried
# with backoff for the retention period) and the monitoring module alerts on its backlog.
resource "google_pubsub_subscription" "dead_letter_bigquery" {
  project = var.project_id
  name    = var.dead_letter_subscription_name
  topic   = google_pubsub_topic.dead_letter.id
  labels  = var.labels

  bigquery_config {
    table = var.dead_letter_table
    # No use_table_schema: the payload lands as-is in the `data` column, whatever it holds
    # (schema/dead_letters.bigquery.json), so a record the records table refused still fits.
    use_table_schema = false
    write_metadata   = true
  }

  retry_policy {
    minimum_backoff = var.retry_minimum_backoff
    maximum_backoff = var.retry_maximum_backoff
  }

  message_retention_duration = var.subscription_retention

  expiration_policy {
    ttl = ""
  }

  depends_on = [google_bigquery_table_iam_member.agent_writes_dead_letters]
}

# --- IAM for the Pub/Sub service agent, one resource each ------------------------------------

resource "google_bigquery_table_iam_member" "agent_writes_records" {
  project    = var.records_table_ref.project
  dataset_id = var.records_table_ref.dataset_id
  table_id   = var.records_table_ref.table_id
  role       = "roles/bigquery.dataEditor"
  member     = local.pubsub_agent
}

resource "google_bigquery_table_iam_member" "agent_writes_dead_letters" {
  project    = var.dead_letter_table_ref.project
  dataset_id = var.dead_letter_table_ref.dataset_id
  table_id   = var.dead_letter_table_ref.table_id
  role       = "roles/bigquery.dataEditor"
  member     = local.pubsub_agent
}

# Forwarding to the dead-letter topic needs publisher there and subscriber on the source.
resource "google_pubsub_topic_iam_member" "agent_publishes_dead_letters" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "agent_acks_forwarded" {
  project      = var.project_id
  subscription = google_pubsub_subscription.records_bigquery.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

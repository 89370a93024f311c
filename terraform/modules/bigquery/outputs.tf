output "dataset_id" {
  description = "Dataset id (the app's BQ_DATASET)."
  value       = google_bigquery_dataset.this.dataset_id
}

output "table_id" {
  description = "Records table id (the app's BQ_TABLE)."
  value       = google_bigquery_table.records.table_id
}

output "records_table" {
  description = "Records table as project.dataset.table (the BigQuery subscription's target)."
  value       = "${var.project_id}.${google_bigquery_dataset.this.dataset_id}.${google_bigquery_table.records.table_id}"
}

output "dead_letter_table" {
  description = "Dead-letter table as project.dataset.table."
  value       = "${var.project_id}.${google_bigquery_dataset.this.dataset_id}.${google_bigquery_table.dead_letters.table_id}"
}

output "records_table_ref" {
  description = "Project, dataset and table ids of the records table, for table-scoped IAM."
  value = {
    project    = var.project_id
    dataset_id = google_bigquery_dataset.this.dataset_id
    table_id   = google_bigquery_table.records.table_id
  }
}

output "dead_letter_table_ref" {
  description = "Project, dataset and table ids of the dead-letter table, for table-scoped IAM."
  value = {
    project    = var.project_id
    dataset_id = google_bigquery_dataset.this.dataset_id
    table_id   = google_bigquery_table.dead_letters.table_id
  }
}

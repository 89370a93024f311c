variable "project_id" {
  description = "Google Cloud project that holds the dataset."
  type        = string
}

variable "env" {
  description = "Environment (dev or prod), used in descriptions."
  type        = string

  validation {
    condition     = contains(["dev", "prod"], var.env)
    error_message = "env must be dev or prod."
  }
}

variable "location" {
  description = "BigQuery location of the dataset, for example US or us-central1 (same region as Cloud Run keeps egress free)."
  type        = string
}

variable "dataset_id" {
  description = "Dataset id (challenge_latam_data_<env>)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_]{1,1024}$", var.dataset_id))
    error_message = "dataset_id may hold letters, digits and underscores only."
  }
}

variable "table_id" {
  description = "Records table id (challenge_latam_records_<env>); the app reads it as BQ_TABLE."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_]{1,1024}$", var.table_id))
    error_message = "table_id may hold letters, digits and underscores only."
  }
}

variable "dead_letter_table_id" {
  description = "Dead-letter table id (challenge_latam_dead_letters_<env>)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_]{1,1024}$", var.dead_letter_table_id))
    error_message = "dead_letter_table_id may hold letters, digits and underscores only."
  }
}

variable "records_schema_file" {
  description = "Path of schema/records.bigquery.json, the single table schema."
  type        = string
}

variable "dead_letter_schema_file" {
  description = "Path of schema/dead_letters.bigquery.json."
  type        = string
}

variable "partition_expiration_days" {
  description = "Days a records partition is kept before BigQuery deletes it."
  type        = number

  validation {
    condition     = var.partition_expiration_days >= 7
    error_message = "partition_expiration_days must cover at least getData's default 7-day window."
  }
}

variable "dead_letter_expiration_days" {
  description = "Days a dead-letter partition is kept (long enough to inspect and replay)."
  type        = number
  default     = 30

  validation {
    condition     = var.dead_letter_expiration_days >= 7
    error_message = "dead_letter_expiration_days must be at least 7."
  }
}

variable "deletion_protection" {
  description = "Refuse to destroy the tables (true everywhere but throwaway projects)."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels for the dataset and tables."
  type        = map(string)
  default     = {}
}

variable "project_id" {
  description = "Project of the state bucket."
  type        = string
}

variable "bucket_name" {
  description = "Globally unique bucket name (given to terraform init as -backend-config=bucket=...)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be a valid GCS bucket name."
  }
}

variable "location" {
  description = "Bucket location, for example US or us-central1."
  type        = string
}

variable "noncurrent_versions_kept" {
  description = "Older state versions kept before pruning."
  type        = number
  default     = 20

  validation {
    condition     = var.noncurrent_versions_kept >= 1
    error_message = "keep at least one older version."
  }
}

variable "writers" {
  description = "Members with roles/storage.objectAdmin on the bucket (the deployer)."
  type        = list(string)
  default     = []
}

variable "readers" {
  description = "Members with roles/storage.objectViewer on the bucket (the read-only plan identity)."
  type        = list(string)
  default     = []
}

variable "labels" {
  description = "Labels for the bucket."
  type        = map(string)
  default     = {}
}

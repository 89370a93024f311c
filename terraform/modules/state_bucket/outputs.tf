output "bucket" {
  description = "State bucket name: the TF_STATE_BUCKET variable of the GitHub environments."
  value       = google_storage_bucket.state.name
}

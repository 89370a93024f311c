output "topic_name" {
  description = "Records topic short name (the app's PUBSUB_TOPIC)."
  value       = google_pubsub_topic.records.name
}

output "topic_id" {
  description = "Records topic full id (projects/P/topics/T)."
  value       = google_pubsub_topic.records.id
}

output "subscription_name" {
  description = "Records BigQuery subscription short name (monitoring filters on it)."
  value       = google_pubsub_subscription.records_bigquery.name
}

output "dead_letter_topic_name" {
  description = "Dead-letter topic short name."
  value       = google_pubsub_topic.dead_letter.name
}

output "dead_letter_subscription_name" {
  description = "Dead-letter BigQuery subscription short name."
  value       = google_pubsub_subscription.dead_letter_bigquery.name
}

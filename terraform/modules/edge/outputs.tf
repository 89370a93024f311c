output "ip_address" {
  description = "Global IP of the load balancer (point the domain's A record here)."
  value       = google_compute_global_address.edge.address
}

output "security_policy" {
  description = "Cloud Armor policy id."
  value       = google_compute_security_policy.edge.id
}

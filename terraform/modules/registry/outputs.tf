output "registry" {
  description = "Registry path: the REGISTRY repository variable of the workflows (<location>-docker.pkg.dev/<project>/<repository>)."
  value       = "${var.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}

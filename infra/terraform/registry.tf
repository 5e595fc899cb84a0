# Images: bayes-beats-service (the Bento), bayes-beats-train, bayes-beats-mlflow.
resource "google_artifact_registry_repository" "images" {
  # checkov:skip=CKV_GCP_84: Google-managed encryption at rest suffices: the images hold code and a smoke model, no user data; a CMEK would add a KMS key ring to operate and rotate
  depends_on = [google_project_service.apis]

  repository_id = var.name
  location      = var.region
  format        = "DOCKER"
  description   = "Bayes' Beats images"
  labels        = var.labels

  docker_config {
    immutable_tags = true
  }
}

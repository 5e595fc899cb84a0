# Images: bayes-beats-service (the Bento), bayes-beats-train, bayes-beats-mlflow.
resource "google_artifact_registry_repository" "images" {
  # checkov:skip=CKV_GCP_84: Google-managed encryption; the images hold no data beyond the public model code and weights (a CMEK adds a KMS key ring to run and rotate)
  repository_id = var.name
  location      = var.region
  format        = "DOCKER"
  description   = "Bayes' Beats images"
  labels        = var.labels

  docker_config {
    immutable_tags = true
  }
}

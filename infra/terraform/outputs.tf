output "registry" {
  description = "Image prefix for kustomize (infra/k8s/overlays/production) and the release workflow."
  value       = "${var.region}-docker.pkg.dev/${var.project}/${google_artifact_registry_repository.images.repository_id}"
}

output "cluster" {
  description = "gcloud container clusters get-credentials <cluster> --region <region>"
  value       = google_container_cluster.main.name
}

output "sql_connection_name" {
  description = "The cloud-sql-proxy instance argument (mlflow Deployment)."
  value       = google_sql_database_instance.mlflow.connection_name
}

output "mlflow_db_password" {
  description = "Goes into the Kubernetes Secret mlflow-db (key: uri), never into a manifest."
  value       = random_password.mlflow_db.result
  sensitive   = true
}

output "service_accounts" {
  description = "iam.gke.io/gcp-service-account annotations of the Kubernetes service accounts."
  value = {
    mlflow = google_service_account.mlflow.email
    train  = google_service_account.train.email
  }
}

output "github_workload_identity_provider" {
  description = "GitHub variable GCP_WORKLOAD_IDENTITY_PROVIDER of the release workflow."
  value       = google_iam_workload_identity_pool_provider.github.name
}

output "github_service_account" {
  description = "GitHub variable GCP_SERVICE_ACCOUNT of the release workflow."
  value       = google_service_account.release.email
}

output "buckets" {
  description = "DVC remote and MLflow artifact destination."
  value = {
    dvc    = "gs://${google_storage_bucket.dvc.name}/store"
    mlflow = "gs://${google_storage_bucket.mlflow.name}"
  }
}

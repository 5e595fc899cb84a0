# Least privilege: one Google service account per workload, each bound to one Kubernetes service account
# through Workload Identity, each with roles on the one resource it uses.

locals {
  k8s_namespace = "bayes-beats"
}

# Nodes: write logs and metrics, pull images; nothing else (workloads use their own identities).
resource "google_service_account" "nodes" {
  depends_on = [google_project_service.apis]

  account_id   = "${var.name}-nodes"
  display_name = "Bayes' Beats GKE nodes"
}

resource "google_project_iam_member" "nodes" {
  for_each = toset([
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
  ])
  project = var.project
  role    = each.value
  member  = "serviceAccount:${google_service_account.nodes.email}"
}

resource "google_artifact_registry_repository_iam_member" "nodes_pull" {
  repository = google_artifact_registry_repository.images.name
  location   = google_artifact_registry_repository.images.location
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${google_service_account.nodes.email}"
}

# MLflow server (KSA bayes-beats/mlflow): connect to Cloud SQL, read and write its artifact bucket.
resource "google_service_account" "mlflow" {
  depends_on = [google_project_service.apis]

  account_id   = "${var.name}-mlflow"
  display_name = "Bayes' Beats MLflow server"
}

resource "google_project_iam_member" "mlflow_sql" {
  project = var.project
  role    = "roles/cloudsql.client"
  member  = "serviceAccount:${google_service_account.mlflow.email}"
}

resource "google_storage_bucket_iam_member" "mlflow_artifacts" {
  bucket = google_storage_bucket.mlflow.name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.mlflow.email}"
}

# Training Jobs and the monitor CronJob (KSA bayes-beats/train): the DVC remote.
resource "google_service_account" "train" {
  depends_on = [google_project_service.apis]

  account_id   = "${var.name}-train"
  display_name = "Bayes' Beats training and monitoring"
}

resource "google_storage_bucket_iam_member" "train_dvc" {
  bucket = google_storage_bucket.dvc.name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.train.email}"
}

resource "google_service_account_iam_member" "workload_identity" {
  for_each = {
    mlflow = google_service_account.mlflow.name
    train  = google_service_account.train.name
  }
  service_account_id = each.value
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project}.svc.id.goog[${local.k8s_namespace}/${each.key}]"
}

# GitHub Actions (release workflow on tags) pushes images with short-lived tokens: Workload Identity
# Federation, no JSON key. Only this repository's jobs in the GitHub environment `release` (protected:
# tags v* only, see .github/workflows/release.yml) may impersonate the pusher.
resource "google_iam_workload_identity_pool" "github" {
  depends_on = [google_project_service.apis]

  workload_identity_pool_id = "github"
  display_name              = "GitHub Actions"
}

resource "google_iam_workload_identity_pool_provider" "github" {
  workload_identity_pool_id          = google_iam_workload_identity_pool.github.workload_identity_pool_id
  workload_identity_pool_provider_id = "github"
  display_name                       = "GitHub OIDC"
  attribute_mapping = {
    "google.subject"       = "assertion.sub"
    "attribute.repository" = "assertion.repository"
    "attribute.ref"        = "assertion.ref"
  }
  attribute_condition = "assertion.sub == 'repo:${var.github_owner}/${var.github_repo}:environment:release' && assertion.ref.startsWith('refs/tags/v')"
  oidc {
    issuer_uri = "https://token.actions.githubusercontent.com"
  }
}

resource "google_service_account" "release" {
  depends_on = [google_project_service.apis]

  account_id   = "${var.name}-release"
  display_name = "Bayes' Beats image pusher (GitHub Actions)"
}

resource "google_artifact_registry_repository_iam_member" "release_push" {
  repository = google_artifact_registry_repository.images.name
  location   = google_artifact_registry_repository.images.location
  role       = "roles/artifactregistry.writer"
  member     = "serviceAccount:${google_service_account.release.email}"
}

resource "google_service_account_iam_member" "release_wif" {
  service_account_id = google_service_account.release.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "principalSet://iam.googleapis.com/${google_iam_workload_identity_pool.github.name}/attribute.repository/${var.github_owner}/${var.github_repo}"
}

# Access logs of the two data buckets land here.
resource "google_storage_bucket" "access_logs" {
  # checkov:skip=CKV_GCP_62: this is the access-log sink itself; logging it into itself would loop
  name                        = "${var.name}-access-logs-${var.project}"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = var.labels

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      age = 365
    }
    action {
      type = "Delete"
    }
  }
}

# DVC remote `gcs` (.dvc/config: gs://bayes-beats-dvc/store): content-addressed, so versioning only
# guards against deletes; old noncurrent versions are dropped after 30 days.
resource "google_storage_bucket" "dvc" {
  name                        = var.dvc_bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = var.labels

  versioning {
    enabled = true
  }

  logging {
    log_bucket = google_storage_bucket.access_logs.name
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 30
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }
}

# MLflow artifacts (models, adapters, WAVs, spectrograms), written only through the MLflow server.
resource "google_storage_bucket" "mlflow" {
  name                        = var.mlflow_bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = var.labels

  versioning {
    enabled = true
  }

  logging {
    log_bucket = google_storage_bucket.access_logs.name
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 90
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }
}

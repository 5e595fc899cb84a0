# Google Cloud for Bayes' Beats: buckets (DVC remote, MLflow artifacts), Cloud SQL (MLflow's backend),
# a private GKE cluster with a CPU pool and an autoscaled GPU pool, Artifact Registry, service accounts.
# State: pass a GCS backend at init (`terraform init -backend-config=bucket=<state bucket>`).
terraform {
  required_version = ">= 1.6"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.0"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }

  backend "gcs" {
    prefix = "bayes-beats/terraform"
  }
}

provider "google" {
  project = var.project
  region  = var.region
  zone    = var.zone
}

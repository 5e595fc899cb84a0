variable "project" {
  description = "Google Cloud project id."
  type        = string
}

variable "region" {
  description = "Region for the cluster, the database, the buckets and the registry."
  type        = string
  default     = "europe-west4"
}

variable "zone" {
  description = "Zone of the GPU node pool (must offer the accelerator)."
  type        = string
  default     = "europe-west4-a"
}

variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "bayes-beats"
}

variable "dvc_bucket" {
  description = "DVC remote bucket (params: remote `gcs` = gs://bayes-beats-dvc/store)."
  type        = string
  default     = "bayes-beats-dvc"
}

variable "mlflow_bucket" {
  description = "MLflow artifact bucket (the server proxies it: --artifacts-destination gs://...)."
  type        = string
  default     = "bayes-beats-mlflow-artifacts"
}

variable "master_authorized_cidr" {
  description = "The one network allowed to reach the GKE control plane (CI runners, a VPN, a bastion)."
  type        = string
}

variable "gpu_machine_type" {
  description = "Machine type of the GPU pool."
  type        = string
  default     = "g2-standard-8"
}

variable "gpu_type" {
  description = "Accelerator of the GPU pool."
  type        = string
  default     = "nvidia-l4"
}

variable "gpu_max_nodes" {
  description = "Upper bound of the GPU pool's autoscaler (it scales to zero when idle)."
  type        = number
  default     = 4
}

variable "github_owner" {
  description = "Owner (user or organisation) of the GitHub repository whose release workflow pushes images."
  type        = string
}

variable "github_repo" {
  description = "Name of that GitHub repository."
  type        = string
  default     = "bayes-beats"
}

variable "labels" {
  description = "Labels on every resource that takes them."
  type        = map(string)
  default = {
    app        = "bayes-beats"
    managed-by = "terraform"
  }
}

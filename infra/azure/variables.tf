variable "subscription_id" {
  description = "Azure subscription to deploy into."
  type        = string
}

variable "name" {
  description = "Prefix of every resource name (lowercase letters and digits)."
  type        = string
  default     = "phifleet"
  validation {
    condition     = can(regex("^[a-z][a-z0-9]{2,11}$", var.name))
    error_message = "name must be 3-12 lowercase letters or digits, starting with a letter."
  }
}

variable "location" {
  description = "Azure region with H100/A100 capacity for your subscription (e.g. eastus2, westus3, swedencentral)."
  type        = string
  default     = "eastus2"
}

variable "kubernetes_version" {
  description = "AKS Kubernetes version (null: the region's default)."
  type        = string
  default     = null
}

variable "api_server_authorized_ip_ranges" {
  description = "CIDRs allowed to reach the Kubernetes API (your office/VPN, CI runners, the AKS egress IP)."
  type        = list(string)
  validation {
    condition     = length(var.api_server_authorized_ip_ranges) > 0
    error_message = "give at least one CIDR: the Kubernetes API is not left open to the internet."
  }
}

variable "system_vm_size" {
  description = "System pool VM size (critical add-ons only)."
  type        = string
  default     = "Standard_D4ds_v5"
}

variable "cpu_vm_size" {
  description = "CPU pool VM size: Ray heads and the CPU stages of batch jobs."
  type        = string
  default     = "Standard_D16ds_v5"
}

variable "cpu_max_count" {
  description = "Most CPU nodes."
  type        = number
  default     = 4
}

variable "gpu_vm_size" {
  description = "GPU pool VM size: one Phi-4 replica per GPU."
  type        = string
  default     = "Standard_NC40ads_H100_v5"
  validation {
    condition     = contains(["Standard_NC40ads_H100_v5", "Standard_NC80adis_H100_v5", "Standard_NC24ads_A100_v4", "Standard_NC48ads_A100_v4"], var.gpu_vm_size)
    error_message = "gpu_vm_size must be an H100 (NC40ads/NC80adis_H100_v5) or A100 (NC24ads/NC48ads_A100_v4) size."
  }
}

variable "gpu_max_count" {
  description = "Most GPU nodes (the pool scales from 0)."
  type        = number
  default     = 4
}

variable "gpu_spot" {
  description = "Run the GPU pool on Spot VMs (much cheaper, evictable: fine for resumable batch jobs)."
  type        = bool
  default     = false
}

variable "create_acr" {
  description = "Create an Azure Container Registry for the phifleet image (AKS pulls with its kubelet identity)."
  type        = bool
  default     = true
}

variable "enable_managed_prometheus" {
  description = "Azure Monitor managed Prometheus scraping the cluster (the chart's metrics)."
  type        = bool
  default     = true
}

variable "namespace" {
  description = "Namespace of the phifleet release."
  type        = string
  default     = "phifleet"
}

variable "service_account_name" {
  description = "ServiceAccount of the phifleet pods; the workload identity is federated to exactly this name."
  type        = string
  default     = "phifleet"
}

variable "image" {
  description = "phifleet image repository (default: <acr>/phifleet when create_acr)."
  type        = string
  default     = null
}

variable "image_tag" {
  description = "phifleet image tag (pin a digest in production: 0.2.0@sha256:...)."
  type        = string
  default     = "0.2.0"
}

variable "install_phifleet" {
  description = "Install helm/phifleet (and the KubeRay operator) into the new cluster."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = { app = "phifleet" }
}

variable "storage_allowed_ip_ranges" {
  description = "Public IPs/CIDRs (your workstation, CI) allowed to upload corpora and read results; the AKS subnet always is."
  type        = list(string)
  default     = []
}

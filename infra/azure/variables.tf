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

variable "install_nvidia_device_plugin" {
  description = "Install the NVIDIA device plugin (Helm) onto the GPU pool. Turn off when the NVIDIA GPU Operator or AKS-managed GPU node pools provide it (README: GPU drivers and the device plugin)."
  type        = bool
  default     = true
}

variable "enable_web_app_routing" {
  description = "The AKS application routing add-on (managed NGINX, IngressClass webapprouting.kubernetes.azure.com), which values-aks-h100.yaml's Ingress uses."
  type        = bool
  default     = true
}

variable "web_app_routing_dns_zone_ids" {
  description = "Azure DNS zone ids the application routing add-on may write records into ([]: you point DNS at the ingress IP yourself)."
  type        = list(string)
  default     = []
}

variable "ingress_host" {
  description = "Host name of the endpoint's Ingress (e.g. phi4.example.com). null: no Ingress (reach the endpoint with kubectl port-forward). Needs enable_web_app_routing and the TLS Secret ingress_tls_secret_name (README)."
  type        = string
  default     = null
}

variable "ingress_tls_secret_name" {
  description = "kubernetes.io/tls Secret in the release namespace holding ingress_host's certificate (created by you, README)."
  type        = string
  default     = "phi4-tls"
}

variable "maintenance_window_auto_upgrade" {
  description = "Weekly window for the cluster's Kubernetes patch upgrades (automatic_upgrade_channel = patch); they drain nodes, so Ray pods restart."
  type = object({
    day_of_week    = string
    start_time     = string
    utc_offset     = string
    duration_hours = number
  })
  default = { day_of_week = "Sunday", start_time = "02:00", utc_offset = "+00:00", duration_hours = 4 }
  validation {
    condition = (
      contains(["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"], var.maintenance_window_auto_upgrade.day_of_week)
      && can(regex("^([01][0-9]|2[0-3]):[0-5][0-9]$", var.maintenance_window_auto_upgrade.start_time))
      && can(regex("^[+-](0[0-9]|1[0-4]):[0-5][0-9]$", var.maintenance_window_auto_upgrade.utc_offset))
      && var.maintenance_window_auto_upgrade.duration_hours >= 4 && var.maintenance_window_auto_upgrade.duration_hours <= 24
    )
    error_message = "day_of_week is a weekday name, start_time HH:mm, utc_offset +HH:mm or -HH:mm, duration_hours 4-24 (AKS's limits)."
  }
}

variable "maintenance_window_node_os" {
  description = "Weekly window for node image upgrades (node_os_upgrade_channel = NodeImage); they reimage nodes, so Ray pods restart."
  type = object({
    day_of_week    = string
    start_time     = string
    utc_offset     = string
    duration_hours = number
  })
  default = { day_of_week = "Saturday", start_time = "02:00", utc_offset = "+00:00", duration_hours = 4 }
  validation {
    condition = (
      contains(["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"], var.maintenance_window_node_os.day_of_week)
      && can(regex("^([01][0-9]|2[0-3]):[0-5][0-9]$", var.maintenance_window_node_os.start_time))
      && can(regex("^[+-](0[0-9]|1[0-4]):[0-5][0-9]$", var.maintenance_window_node_os.utc_offset))
      && var.maintenance_window_node_os.duration_hours >= 4 && var.maintenance_window_node_os.duration_hours <= 24
    )
    error_message = "day_of_week is a weekday name, start_time HH:mm, utc_offset +HH:mm or -HH:mm, duration_hours 4-24 (AKS's limits)."
  }
}

variable "gcs_fault_tolerance_redis" {
  description = "Create an Azure Cache for Redis (Standard C1, TLS only, private endpoint) for Ray GCS fault tolerance: the head can restart without taking the Serve replicas down."
  type        = bool
  default     = false
}

variable "redis_password_secret_name" {
  description = "Secret in the release namespace holding the Redis access key under the key `password` (created by you from `az redis list-keys`, README); the chart's head.gcsFaultTolerance.redisPasswordSecret."
  type        = string
  default     = "phifleet-redis"
}

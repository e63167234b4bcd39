# The values helm_release.phifleet passes on top of helm/phifleet/values-aks-h100.yaml. Only variables and locals
# are referenced: the two resource attributes arrive as local.storage_account_name (main.tf) and local.redis_address
# (redis.tf), so tests/infra evaluates this object with `terraform console` (those two stubbed) and renders the chart
# with it, exactly as `terraform apply` would install it.
locals {
  phifleet_values = {
    # The ServiceAccount the workload identity is federated to (identity.tf: system:serviceaccount:<ns>:<name>).
    serviceAccount   = { create = true, name = var.service_account_name }
    workloadIdentity = { enabled = true } # clientId: helm_release.phifleet's `set`
    gpuWorkers = {
      nodeSelector = merge(local.gpu_labels, local.spot_labels)
      tolerations  = concat(local.gpu_tolerations, [{ key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" }])
      maxReplicas  = var.gpu_max_count
    }
    head = {
      nodeSelector = local.cpu_labels
      # Ray GCS fault tolerance against redis.tf's Azure Cache for Redis (var.gcs_fault_tolerance_redis); the
      # password Secret is created before this release (README, quickstart).
      gcsFaultTolerance = {
        enabled      = var.gcs_fault_tolerance_redis
        redisAddress = local.redis_address
        redisPasswordSecret = {
          name = var.gcs_fault_tolerance_redis ? var.redis_password_secret_name : ""
          key  = "password"
        }
      }
    }
    serve = {
      # The app routing add-on's IngressClass (main.tf web_app_routing); no Ingress without a host name.
      ingress = {
        enabled   = var.ingress_host != null && var.enable_web_app_routing
        className = "webapprouting.kubernetes.azure.com"
        hosts     = var.ingress_host == null ? [] : [var.ingress_host]
        tls       = var.ingress_host == null ? [] : [{ secretName = var.ingress_tls_secret_name, hosts = [var.ingress_host] }]
      }
    }
    model = {
      # cluster/weights.py in an init container, with the workload identity (adlfs; AZURE_STORAGE_ANON=false)
      fetch = { source = "abfs://models@${local.storage_account_name}.dfs.core.windows.net/phi-4" }
    }
    metrics = {
      serviceMonitor = {
        enabled    = var.enable_managed_prometheus
        apiVersion = "azmonitoring.coreos.com/v1" # AKS managed Prometheus's own CRD group
      }
    }
  }
}

output "resource_group" {
  description = "Resource group holding everything (delete it to tear down)."
  value       = azurerm_resource_group.this.name
}

output "cluster_name" {
  description = "AKS cluster name (az aks get-credentials -g <resource_group> -n <cluster_name>)."
  value       = azurerm_kubernetes_cluster.this.name
}

output "oidc_issuer_url" {
  description = "The cluster's OIDC issuer (workload identity federation)."
  value       = azurerm_kubernetes_cluster.this.oidc_issuer_url
}

output "workload_identity_client_id" {
  description = "Client id of the identity federated to the phifleet ServiceAccount (chart value workloadIdentity.clientId)."
  value       = azurerm_user_assigned_identity.phifleet.client_id
}

output "storage_account" {
  description = "Storage account for corpora, results and model weights."
  value       = azurerm_storage_account.data.name
}

output "abfs_urls" {
  description = "abfs:// roots of the containers, as job input/output paths."
  value       = { for c in azurerm_storage_container.data : c.name => "abfs://${c.name}@${azurerm_storage_account.data.name}.dfs.core.windows.net/" }
}

output "acr_login_server" {
  description = "Registry to push the phifleet image to (null without create_acr)."
  value       = var.create_acr ? azurerm_container_registry.this[0].login_server : null
}

output "gpu_pool" {
  description = "GPU pool labels and taints (what helm/phifleet's gpuWorkers select and tolerate)."
  value = {
    vm_size = var.gpu_vm_size
    labels  = azurerm_kubernetes_cluster_node_pool.gpu.node_labels
    taints  = azurerm_kubernetes_cluster_node_pool.gpu.node_taints
  }
}

output "gcs_fault_tolerance" {
  description = "With gcs_fault_tolerance_redis: the chart values head.gcsFaultTolerance.* this module sets, and the command that creates the password Secret (run it before the phifleet release). null otherwise."
  value = var.gcs_fault_tolerance_redis ? {
    redis_name   = azurerm_redis_cache.gcs[0].name
    redisAddress = local.redis_address
    redisPasswordSecret = {
      name = var.redis_password_secret_name
      key  = "password"
    }
    create_secret = "kubectl -n ${var.namespace} create secret generic ${var.redis_password_secret_name} --from-literal=password=\"$(az redis list-keys -g ${azurerm_resource_group.this.name} -n ${azurerm_redis_cache.gcs[0].name} --query primaryKey -o tsv)\""
  } : null
}

output "ingress" {
  description = "The endpoint's Ingress (null without ingress_host): its host, TLS Secret, and where its address comes from."
  value = var.ingress_host == null ? null : {
    host       = var.ingress_host
    tls_secret = var.ingress_tls_secret_name
    class      = "webapprouting.kubernetes.azure.com"
    address    = "kubectl -n app-routing-system get service nginx -o jsonpath='{.status.loadBalancer.ingress[0].ip}'"
  }
}

output "phifleet_values" {
  description = "The values this module gives helm/phifleet on top of values-aks-h100.yaml (YAML): for a hand-made `helm install` or `phifleet cluster submit -f`."
  value = yamlencode(merge(local.phifleet_values, {
    workloadIdentity = { enabled = true, clientId = azurerm_user_assigned_identity.phifleet.client_id }
    image            = { repository = local.image, tag = var.image_tag }
  }))
}

output "device_plugin_values" {
  description = "Values for the nvidia-device-plugin chart 0.17.1 that schedule it on this cluster's GPU nodes (YAML)."
  value       = yamlencode(local.device_plugin_values)
}

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

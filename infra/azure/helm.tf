# The KubeRay operator (its CRDs are what helm/phifleet checks for), the NVIDIA device plugin (AKS GPU nodes
# come with drivers but no device plugin), then phifleet with values wired from this module.
resource "helm_release" "kuberay_operator" {
  count            = var.install_phifleet ? 1 : 0
  name             = "kuberay-operator"
  repository       = "https://ray-project.github.io/kuberay-helm"
  chart            = "kuberay-operator"
  version          = "1.7.0"
  namespace        = "kuberay-system"
  create_namespace = true
  depends_on       = [azurerm_role_assignment.cluster_admin]
}

resource "helm_release" "nvidia_device_plugin" {
  count            = var.install_phifleet ? 1 : 0
  name             = "nvidia-device-plugin"
  repository       = "https://nvidia.github.io/k8s-device-plugin"
  chart            = "nvidia-device-plugin"
  version          = "0.17.1"
  namespace        = "nvidia-device-plugin"
  create_namespace = true
  values = [yamlencode({
    nodeSelector = local.gpu_labels
    tolerations  = concat(local.gpu_tolerations, [{ key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" }])
  })]
  depends_on = [azurerm_role_assignment.cluster_admin]
}

resource "helm_release" "phifleet" {
  count            = var.install_phifleet ? 1 : 0
  name             = "phifleet"
  chart            = local.chart
  namespace        = var.namespace
  create_namespace = true
  values = [
    file("${local.chart}/values-aks-h100.yaml"),
    yamlencode({
      gpuWorkers = {
        nodeSelector = merge(local.gpu_labels, local.spot_labels)
        tolerations  = concat(local.gpu_tolerations, [{ key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" }])
        maxReplicas  = var.gpu_max_count
      }
      head = { nodeSelector = local.cpu_labels }
      model = {
        # cluster/weights.py in an init container, with the workload identity (adlfs; AZURE_STORAGE_ANON=false)
        fetch = { source = "abfs://models@${azurerm_storage_account.data.name}.dfs.core.windows.net/phi-4" }
      }
      metrics = {
        serviceMonitor = {
          enabled    = var.enable_managed_prometheus
          apiVersion = "azmonitoring.coreos.com/v1" # AKS managed Prometheus's own CRD
        }
      }
    }),
  ]
  set = [
    { name = "serviceAccount.create", value = "true" },
    { name = "serviceAccount.name", value = var.service_account_name },
    { name = "workloadIdentity.enabled", value = "true" },
    { name = "workloadIdentity.clientId", value = azurerm_user_assigned_identity.phifleet.client_id },
    { name = "image.repository", value = local.image },
    { name = "image.tag", value = var.image_tag },
  ]
  depends_on = [helm_release.kuberay_operator, helm_release.nvidia_device_plugin, azurerm_role_assignment.blob_data]
}

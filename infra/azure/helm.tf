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

# Scheduled by the AKS GPU label and the GPU pool's taints (scheduling.tf: local.device_plugin_values; the chart's
# default NFD affinity matches no AKS node). tests/infra renders this chart version with these values.
resource "helm_release" "nvidia_device_plugin" {
  count            = var.install_phifleet && var.install_nvidia_device_plugin ? 1 : 0
  name             = "nvidia-device-plugin"
  repository       = "https://nvidia.github.io/k8s-device-plugin"
  chart            = "nvidia-device-plugin"
  version          = "0.17.1"
  namespace        = "nvidia-device-plugin"
  create_namespace = true
  values           = [yamlencode(local.device_plugin_values)]
  depends_on       = [azurerm_role_assignment.cluster_admin]
}

resource "helm_release" "phifleet" {
  count            = var.install_phifleet ? 1 : 0
  name             = "phifleet"
  chart            = local.chart
  namespace        = var.namespace
  create_namespace = true
  # values-aks-h100.yaml, then what this module knows (release_values.tf), then the resource-derived ids.
  values = [
    file("${local.chart}/values-aks-h100.yaml"),
    yamlencode(local.phifleet_values),
  ]
  set = [
    { name = "workloadIdentity.clientId", value = azurerm_user_assigned_identity.phifleet.client_id },
    { name = "image.repository", value = local.image },
    { name = "image.tag", value = var.image_tag },
  ]
  depends_on = [helm_release.kuberay_operator, helm_release.nvidia_device_plugin, azurerm_role_assignment.blob_data]
}

# Where pods land: the node pools' labels and taints, what the chart's pods select and tolerate, and the NVIDIA
# device plugin's scheduling. Only variables are referenced here (no resource), so tests/infra evaluates these
# locals with `terraform console` and checks them against Kubernetes' scheduling rules.
locals {
  # What the chart's GPU workers tolerate and select by default (helm/phifleet/values.yaml): tests read both.
  gpu_taints  = ["sku=gpu:NoSchedule"]
  gpu_labels  = { "phifleet.io/pool" = "gpu" }
  cpu_labels  = { "phifleet.io/pool" = "cpu" }
  spot_taints = var.gpu_spot ? ["kubernetes.azure.com/scalesetpriority=spot:NoSchedule"] : []
  spot_labels = var.gpu_spot ? { "kubernetes.azure.com/scalesetpriority" = "spot" } : {}
  gpu_tolerations = [
    for t in concat(local.gpu_taints, local.spot_taints) : {
      key      = split("=", t)[0]
      operator = "Equal"
      value    = split(":", split("=", t)[1])[0]
      effect   = split(":", t)[1]
    }
  ]

  # A label AKS itself puts on every node of an NVIDIA GPU pool (an AKS reserved label, not settable by us:
  # https://learn.microsoft.com/azure/aks/use-labels#reserved-system-labels, `kubernetes.azure.com/accelerator` =
  # `nvidia`; the cluster autoscaler's Azure provider identifies GPU nodes by it, kubernetes/autoscaler#7235).
  aks_gpu_labels = { "kubernetes.azure.com/accelerator" = "nvidia" }

  # Values for the nvidia-device-plugin chart 0.17.1 (NVIDIA/k8s-device-plugin, deployments/helm/
  # nvidia-device-plugin/values.yaml at v0.17.1). Its default `affinity` requires a node-feature-discovery label
  # (feature.node.kubernetes.io/pci-10de.present, cpu-model.vendor_id=NVIDIA) or nvidia.com/gpu.present=true; this
  # module runs no NFD and AKS sets none of them, so the DaemonSet would never schedule and no node would advertise
  # nvidia.com/gpu. Helm replaces lists when it merges values, so `nodeSelectorTerms` below replaces the chart's
  # terms (templates/daemonset-device-plugin.yml renders .Values.affinity and .Values.tolerations as given).
  device_plugin_values = {
    affinity = {
      nodeAffinity = {
        requiredDuringSchedulingIgnoredDuringExecution = {
          nodeSelectorTerms = [{
            matchExpressions = [for k, v in local.aks_gpu_labels : { key = k, operator = "In", values = [v] }]
          }]
        }
      }
    }
    # The chart's own two tolerations (CriticalAddonsOnly, nvidia.com/gpu) and the GPU pool's taints (sku=gpu,
    # and the spot taint AKS puts on Spot pools).
    tolerations = concat(
      [
        { key = "CriticalAddonsOnly", operator = "Exists" },
        { key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" },
      ],
      local.gpu_tolerations,
    )
  }
}

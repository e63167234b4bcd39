data "azurerm_client_config" "current" {}

# The node pools' labels and taints, and what pods select and tolerate, are in scheduling.tf.
locals {
  chart                = "${path.module}/../../helm/phifleet"
  image                = coalesce(var.image, var.create_acr ? "${azurerm_container_registry.this[0].login_server}/phifleet" : "ghcr.io/phifleet/phifleet")
  storage_account_name = azurerm_storage_account.data.name # release_values.tf
}

resource "azurerm_resource_group" "this" {
  name     = "${var.name}-rg"
  location = var.location
  tags     = var.tags
}

resource "random_string" "suffix" {
  length  = 6
  upper   = false
  special = false
}

# --- network ------------------------------------------------------------------------------------------------
resource "azurerm_virtual_network" "this" {
  name                = "${var.name}-vnet"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  address_space       = ["10.40.0.0/16"]
  tags                = var.tags
}

resource "azurerm_network_security_group" "nodes" {
  name                = "${var.name}-nodes-nsg"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  tags                = var.tags
}

resource "azurerm_subnet_network_security_group_association" "nodes" {
  subnet_id                 = azurerm_subnet.nodes.id
  network_security_group_id = azurerm_network_security_group.nodes.id
}

resource "azurerm_subnet" "nodes" {
  name                 = "nodes"
  resource_group_name  = azurerm_resource_group.this.name
  virtual_network_name = azurerm_virtual_network.this.name
  address_prefixes     = ["10.40.0.0/20"]
  service_endpoints    = ["Microsoft.Storage"] # pods reach the storage account without a public path
}

# --- observability ------------------------------------------------------------------------------------------
resource "azurerm_log_analytics_workspace" "this" {
  name                = "${var.name}-logs"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  sku                 = "PerGB2018"
  retention_in_days   = 30
  tags                = var.tags
}

# --- AKS ----------------------------------------------------------------------------------------------------
resource "azurerm_kubernetes_cluster" "this" {
  #checkov:skip=CKV_AZURE_115:a private API server needs a VPN or jump host; authorized IP ranges guard it instead
  #checkov:skip=CKV_AZURE_117:disk encryption with customer-managed keys needs a Key Vault this module leaves to the operator
  #checkov:skip=CKV_AZURE_226:ephemeral OS disks do not fit every GPU SKU's cache size; managed disks are the safe default
  #checkov:skip=CKV_AZURE_170:the Standard (paid SLA) tier is set; the check wants the Premium tier's long-term support
  #checkov:skip=CKV_AZURE_6:authorized_ip_ranges come from var.api_server_authorized_ip_ranges, required and validated non-empty; checkov cannot see a variable's value
  name                              = "${var.name}-aks"
  location                          = azurerm_resource_group.this.location
  resource_group_name               = azurerm_resource_group.this.name
  dns_prefix                        = var.name
  kubernetes_version                = var.kubernetes_version
  sku_tier                          = "Standard"
  oidc_issuer_enabled               = true
  workload_identity_enabled         = true
  local_account_disabled            = true
  azure_policy_enabled              = true
  automatic_upgrade_channel         = "patch"
  node_os_upgrade_channel           = "NodeImage"
  role_based_access_control_enabled = true

  default_node_pool {
    name                         = "system"
    vm_size                      = var.system_vm_size
    only_critical_addons_enabled = true # the system pool taints itself CriticalAddonsOnly
    auto_scaling_enabled         = true
    min_count                    = 2
    max_count                    = 3
    max_pods                     = 50
    vnet_subnet_id               = azurerm_subnet.nodes.id
    zones                        = ["1", "2", "3"]
    host_encryption_enabled      = true # needs the EncryptionAtHost feature on the subscription (README)
    upgrade_settings {
      max_surge = "10%"
    }
  }

  identity {
    type = "SystemAssigned"
  }

  azure_active_directory_role_based_access_control {
    azure_rbac_enabled = true
    tenant_id          = data.azurerm_client_config.current.tenant_id
  }

  network_profile {
    network_plugin      = "azure"
    network_plugin_mode = "overlay"
    network_data_plane  = "cilium"
    network_policy      = "cilium" # enforces the chart's NetworkPolicy
    pod_cidr            = "192.168.0.0/16"
  }

  api_server_access_profile {
    authorized_ip_ranges = var.api_server_authorized_ip_ranges
  }

  oms_agent {
    log_analytics_workspace_id      = azurerm_log_analytics_workspace.this.id
    msi_auth_for_monitoring_enabled = true
  }

  dynamic "monitor_metrics" {
    for_each = var.enable_managed_prometheus ? [1] : []
    content {}
  }

  key_vault_secrets_provider {
    secret_rotation_enabled = true
  }

  # The application routing add-on (managed NGINX): it creates the IngressClass `webapprouting.kubernetes.azure.com`
  # that values-aks-h100.yaml's Ingress names (learn.microsoft.com/azure/aks/app-routing). azurerm 4.x:
  # `web_app_routing { dns_zone_ids = [...] }`, an empty list when no Azure DNS zone is managed by the add-on.
  dynamic "web_app_routing" {
    for_each = var.enable_web_app_routing ? [1] : []
    content {
      dns_zone_ids = var.web_app_routing_dns_zone_ids
    }
  }

  # Planned maintenance (azurerm 4.x `maintenance_window_auto_upgrade` / `maintenance_window_node_os`, AKS's
  # aksManagedAutoUpgradeSchedule and aksManagedNodeOSUpgradeSchedule): the `patch` channel's Kubernetes upgrades
  # and the `NodeImage` channel's node image upgrades drain nodes (Ray pods restart) only inside these windows.
  maintenance_window_auto_upgrade {
    frequency   = "Weekly"
    interval    = 1
    day_of_week = var.maintenance_window_auto_upgrade.day_of_week
    start_time  = var.maintenance_window_auto_upgrade.start_time
    utc_offset  = var.maintenance_window_auto_upgrade.utc_offset
    duration    = var.maintenance_window_auto_upgrade.duration_hours
  }

  maintenance_window_node_os {
    frequency   = "Weekly"
    interval    = 1
    day_of_week = var.maintenance_window_node_os.day_of_week
    start_time  = var.maintenance_window_node_os.start_time
    utc_offset  = var.maintenance_window_node_os.utc_offset
    duration    = var.maintenance_window_node_os.duration_hours
  }

  tags = var.tags
}

resource "azurerm_kubernetes_cluster_node_pool" "cpu" {
  name                    = "cpu"
  kubernetes_cluster_id   = azurerm_kubernetes_cluster.this.id
  mode                    = "User"
  vm_size                 = var.cpu_vm_size
  auto_scaling_enabled    = true
  min_count               = 1
  max_count               = var.cpu_max_count
  max_pods                = 50
  vnet_subnet_id          = azurerm_subnet.nodes.id
  host_encryption_enabled = true
  node_labels             = local.cpu_labels
  tags                    = var.tags
}

resource "azurerm_kubernetes_cluster_node_pool" "gpu" {
  name                    = "gpu"
  kubernetes_cluster_id   = azurerm_kubernetes_cluster.this.id
  mode                    = "User"
  vm_size                 = var.gpu_vm_size
  auto_scaling_enabled    = true
  min_count               = 0 # scale to zero: GPUs are paid for only while Ray asks for them
  max_count               = var.gpu_max_count
  max_pods                = 50
  vnet_subnet_id          = azurerm_subnet.nodes.id
  host_encryption_enabled = true
  node_taints             = concat(local.gpu_taints, local.spot_taints) # AKS adds no GPU taint by itself
  node_labels             = merge(local.gpu_labels, local.spot_labels)
  priority                = var.gpu_spot ? "Spot" : "Regular"
  eviction_policy         = var.gpu_spot ? "Delete" : null
  spot_max_price          = var.gpu_spot ? -1 : null
  tags                    = var.tags
}

# The operator running terraform administers the cluster (local accounts are disabled).
resource "azurerm_role_assignment" "cluster_admin" {
  scope                = azurerm_kubernetes_cluster.this.id
  role_definition_name = "Azure Kubernetes Service RBAC Cluster Admin"
  principal_id         = data.azurerm_client_config.current.object_id
}

# --- registry -----------------------------------------------------------------------------------------------
resource "azurerm_container_registry" "this" {
  #checkov:skip=CKV_AZURE_165:geo-replication is a Premium-tier cost this module leaves to the operator
  #checkov:skip=CKV_AZURE_166:image quarantine needs a scanning pipeline this module does not include
  #checkov:skip=CKV_AZURE_139:AKS pulls over the public endpoint with its kubelet identity (AcrPull); no private endpoint
  #checkov:skip=CKV_AZURE_233:zone redundancy needs the Premium tier
  #checkov:skip=CKV_AZURE_237:dedicated data endpoints need the Premium tier
  #checkov:skip=CKV_AZURE_163:vulnerability scanning is Defender for Containers, enabled per subscription
  #checkov:skip=CKV_AZURE_164:content trust needs the Premium tier
  #checkov:skip=CKV_AZURE_167:untagged-manifest retention needs the Premium tier
  count                         = var.create_acr ? 1 : 0
  name                          = "${var.name}${random_string.suffix.result}"
  location                      = azurerm_resource_group.this.location
  resource_group_name           = azurerm_resource_group.this.name
  sku                           = "Standard"
  admin_enabled                 = false
  public_network_access_enabled = true
  tags                          = var.tags
}

resource "azurerm_role_assignment" "acr_pull" {
  count                = var.create_acr ? 1 : 0
  scope                = azurerm_container_registry.this[0].id
  role_definition_name = "AcrPull"
  principal_id         = azurerm_kubernetes_cluster.this.kubelet_identity[0].object_id
}

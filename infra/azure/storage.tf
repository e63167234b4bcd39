# Corpora, results and model weights. Identity-only access (no shared keys), reachable from the AKS subnet.
resource "azurerm_storage_account" "data" {
  #checkov:skip=CKV2_AZURE_1:customer-managed keys need a Key Vault this module leaves to the operator
  #checkov:skip=CKV2_AZURE_33:a private endpoint needs private DNS this module does not create; the AKS subnet's service endpoint and network rules restrict access
  #checkov:skip=CKV_AZURE_206:ZRS (zone-redundant) is chosen; GRS would copy corpora and results across regions, which batch data rarely needs
  #checkov:skip=CKV_AZURE_33:queue logging does not apply: the account stores blobs only
  #checkov:skip=CKV2_AZURE_38:soft delete is on for blobs and containers (7 days); HNS accounts do not support versioning
  #checkov:skip=CKV2_AZURE_40:shared key access is disabled (shared_access_key_enabled = false)
  #checkov:skip=CKV2_AZURE_41:no SAS is issued: shared keys are disabled and access is by workload identity
  #checkov:skip=CKV_AZURE_59:the public endpoint stays on for operators' uploads, but network rules deny all except the AKS subnet and storage_allowed_ip_ranges
  name                            = "${var.name}data${random_string.suffix.result}"
  location                        = azurerm_resource_group.this.location
  resource_group_name             = azurerm_resource_group.this.name
  account_kind                    = "StorageV2"
  account_tier                    = "Standard"
  account_replication_type        = "ZRS"
  is_hns_enabled                  = true # abfs:// (ADLS Gen2) paths for the jobs
  min_tls_version                 = "TLS1_2"
  https_traffic_only_enabled      = true
  shared_access_key_enabled       = false
  allow_nested_items_to_be_public = false
  local_user_enabled              = false
  public_network_access_enabled   = true # restricted by the network rules below

  network_rules {
    default_action             = "Deny"
    bypass                     = ["AzureServices", "Logging", "Metrics"]
    virtual_network_subnet_ids = [azurerm_subnet.nodes.id]
    ip_rules                   = var.storage_allowed_ip_ranges
  }

  blob_properties {
    delete_retention_policy {
      days = 7
    }
    container_delete_retention_policy {
      days = 7
    }
  }

  sas_policy {
    expiration_period = "01.00:00:00"
  }

  tags = var.tags
}

resource "azurerm_storage_container" "data" {
  #checkov:skip=CKV2_AZURE_21:blob read logging goes through the account's diagnostic settings, not per container
  for_each              = toset(["corpora", "results", "models"])
  name                  = each.key
  storage_account_id    = azurerm_storage_account.data.id
  container_access_type = "private"
}

# The identity the phifleet pods use for Blob Storage (abfs:// inputs/outputs, model download), federated to the
# release's ServiceAccount: Azure issues tokens only to pods running as exactly that ServiceAccount.
resource "azurerm_user_assigned_identity" "phifleet" {
  name                = "${var.name}-workload"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  tags                = var.tags
}

resource "azurerm_federated_identity_credential" "phifleet" {
  name                = "${var.name}-${var.namespace}-${var.service_account_name}"
  resource_group_name = azurerm_resource_group.this.name
  parent_id           = azurerm_user_assigned_identity.phifleet.id
  audience            = ["api://AzureADTokenExchange"]
  issuer              = azurerm_kubernetes_cluster.this.oidc_issuer_url
  subject             = "system:serviceaccount:${var.namespace}:${var.service_account_name}"
}

resource "azurerm_role_assignment" "blob_data" {
  scope                = azurerm_storage_account.data.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.phifleet.principal_id
}

# Whoever runs terraform uploads the weights and corpora (README quickstart: `az storage blob upload-batch
# --auth-mode login`): with shared keys disabled, that needs a data-plane role on the account (Owner is not one).
resource "azurerm_role_assignment" "operator_blob_data" {
  scope                = azurerm_storage_account.data.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = data.azurerm_client_config.current.object_id
}

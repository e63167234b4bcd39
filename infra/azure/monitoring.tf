# Azure Monitor managed Prometheus: the AKS metrics add-on scrapes the chart's ServiceMonitor
# (azmonitoring.coreos.com/v1, see helm_release.phifleet) into an Azure Monitor workspace.
resource "azurerm_monitor_workspace" "this" {
  count               = var.enable_managed_prometheus ? 1 : 0
  name                = "${var.name}-prometheus"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  tags                = var.tags
}

resource "azurerm_monitor_data_collection_endpoint" "prometheus" {
  count               = var.enable_managed_prometheus ? 1 : 0
  name                = "${var.name}-prometheus-dce"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  kind                = "Linux"
  tags                = var.tags
}

resource "azurerm_monitor_data_collection_rule" "prometheus" {
  count                       = var.enable_managed_prometheus ? 1 : 0
  name                        = "${var.name}-prometheus-dcr"
  location                    = azurerm_resource_group.this.location
  resource_group_name         = azurerm_resource_group.this.name
  data_collection_endpoint_id = azurerm_monitor_data_collection_endpoint.prometheus[0].id
  kind                        = "Linux"

  destinations {
    monitor_account {
      monitor_account_id = azurerm_monitor_workspace.this[0].id
      name               = "prometheus"
    }
  }

  data_flow {
    streams      = ["Microsoft-PrometheusMetrics"]
    destinations = ["prometheus"]
  }

  data_sources {
    prometheus_forwarder {
      streams = ["Microsoft-PrometheusMetrics"]
      name    = "PrometheusDataSource"
    }
  }

  tags = var.tags
}

resource "azurerm_monitor_data_collection_rule_association" "prometheus" {
  count                   = var.enable_managed_prometheus ? 1 : 0
  name                    = "${var.name}-prometheus-dcra"
  target_resource_id      = azurerm_kubernetes_cluster.this.id
  data_collection_rule_id = azurerm_monitor_data_collection_rule.prometheus[0].id
}

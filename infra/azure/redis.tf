# Optional Azure Cache for Redis for Ray GCS fault tolerance (var.gcs_fault_tolerance_redis): the GCS keeps its
# tables in Redis, so a restarted head finds the cluster's state and the workers (and Serve replicas) keep running.
# Standard tier (a primary with a replica and an SLA: Ray's docs ask for a highly available Redis), TLS only, no public
# network access: the pods reach it through a private endpoint in the VNet, resolved by a private DNS zone.
# Wired into helm_release.phifleet as head.gcsFaultTolerance (address rediss://<host>:6380, password from the
# Secret var.redis_password_secret_name, which the README's quickstart creates from `az redis list-keys`).
locals {
  redis_address = var.gcs_fault_tolerance_redis ? "rediss://${azurerm_redis_cache.gcs[0].hostname}:${azurerm_redis_cache.gcs[0].ssl_port}" : ""
}

resource "azurerm_subnet" "endpoints" {
  count                = var.gcs_fault_tolerance_redis ? 1 : 0
  name                 = "endpoints"
  resource_group_name  = azurerm_resource_group.this.name
  virtual_network_name = azurerm_virtual_network.this.name
  address_prefixes     = ["10.40.16.0/24"] # beside the nodes' 10.40.0.0/20
}

resource "azurerm_subnet_network_security_group_association" "endpoints" {
  count                     = var.gcs_fault_tolerance_redis ? 1 : 0
  subnet_id                 = azurerm_subnet.endpoints[0].id
  network_security_group_id = azurerm_network_security_group.nodes.id
}

resource "azurerm_redis_cache" "gcs" {
  count                         = var.gcs_fault_tolerance_redis ? 1 : 0
  name                          = "${var.name}-gcs-${random_string.suffix.result}" # globally unique
  location                      = azurerm_resource_group.this.location
  resource_group_name           = azurerm_resource_group.this.name
  sku_name                      = "Standard"
  family                        = "C"
  capacity                      = 1 # 1 GB: the GCS's tables are small
  redis_version                 = "6"
  non_ssl_port_enabled          = false
  minimum_tls_version           = "1.2"
  public_network_access_enabled = false

  redis_configuration {
    # The GCS's keys carry no TTL; never evict them (a full cache refuses writes instead of losing cluster state).
    maxmemory_policy = "noeviction"
  }

  tags = var.tags
}

resource "azurerm_private_dns_zone" "redis" {
  count               = var.gcs_fault_tolerance_redis ? 1 : 0
  name                = "privatelink.redis.cache.windows.net"
  resource_group_name = azurerm_resource_group.this.name
  tags                = var.tags
}

resource "azurerm_private_dns_zone_virtual_network_link" "redis" {
  count                 = var.gcs_fault_tolerance_redis ? 1 : 0
  name                  = "${var.name}-redis"
  resource_group_name   = azurerm_resource_group.this.name
  private_dns_zone_name = azurerm_private_dns_zone.redis[0].name
  virtual_network_id    = azurerm_virtual_network.this.id
  tags                  = var.tags
}

resource "azurerm_private_endpoint" "redis" {
  count               = var.gcs_fault_tolerance_redis ? 1 : 0
  name                = "${var.name}-redis-pe"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  subnet_id           = azurerm_subnet.endpoints[0].id

  private_service_connection {
    name                           = "${var.name}-redis"
    private_connection_resource_id = azurerm_redis_cache.gcs[0].id
    subresource_names              = ["redisCache"]
    is_manual_connection           = false
  }

  private_dns_zone_group {
    name                 = "redis"
    private_dns_zone_ids = [azurerm_private_dns_zone.redis[0].id]
  }

  tags = var.tags
}

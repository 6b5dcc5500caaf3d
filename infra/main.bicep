// Wharf on Azure: Flex Consumption function app with a user-assigned identity, storage (blobs, queues,
// tables), Key Vault for partner credentials, Service Bus topic for events, Application Insights.
// Identity-based connections throughout: no storage keys or connection strings in app settings.
targetScope = 'resourceGroup'

@minLength(1)
@maxLength(64)
param environmentName string
param location string = resourceGroup().location

var token = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var tags = { 'azd-env-name': environmentName }
var deploymentContainer = 'deployments'

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-wharf-${token}'
  location: location
  tags: tags
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'stwharf${token}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
  resource blobs 'blobServices' = {
    name: 'default'
    resource deployments 'containers' = { name: deploymentContainer }
    resource inbound 'containers' = { name: 'inbound' }
    resource drop 'containers' = { name: 'drop' }
    resource processed 'containers' = { name: 'processed' }
    resource quarantine 'containers' = { name: 'quarantine' }
    resource archive 'containers' = { name: 'archive' }
    resource outbound 'containers' = { name: 'outbound' }
    resource reports 'containers' = { name: 'reports' }
    resource staging 'containers' = { name: 'staging' }
  }
  resource queues 'queueServices' = {
    name: 'default'
    resource polls 'queues' = { name: 'poll-requests' }
    resource landed 'queues' = { name: 'file-landed' }
    resource events 'queues' = { name: 'wharf-events' }
  }
  resource tables 'tableServices' = {
    name: 'default'
    resource jobs 'tables' = { name: 'IntegrationJob' }
    resource transfers 'tables' = { name: 'FileTransfer' }
    resource logs 'tables' = { name: 'IntegrationLog' }
    resource events 'tables' = { name: 'JobEvents' }
    resource ledger 'tables' = { name: 'Ledger' }
    resource breakers 'tables' = { name: 'Breakers' }
    resource deliveries 'tables' = { name: 'Deliveries' }
  }
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-wharf-${token}'
  location: location
  tags: tags
  properties: { retentionInDays: 30, sku: { name: 'PerGB2018' } }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-wharf-${token}'
  location: location
  tags: tags
  kind: 'web'
  properties: { Application_Type: 'web', WorkspaceResourceId: logs.id, DisableLocalAuth: true }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: 'kv-wharf-${token}'
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    enablePurgeProtection: true
  }
}

resource serviceBus 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: 'sb-wharf-${token}'
  location: location
  tags: tags
  sku: { name: 'Standard', tier: 'Standard' }
  properties: { disableLocalAuth: true }
  resource topic 'topics' = { name: 'wharf-events' }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-wharf-${token}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { tier: 'FlexConsumption', name: 'FC1' }
  properties: { reserved: true }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: 'func-wharf-${token}'
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: { type: 'UserAssigned', userAssignedIdentities: { '${identity.id}': {} } }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: { type: 'UserAssignedIdentity', userAssignedIdentityResourceId: identity.id }
        }
      }
      scaleAndConcurrency: { maximumInstanceCount: 40, instanceMemoryMB: 2048 }
      runtime: { name: 'python', version: '3.11' }
    }
    siteConfig: {
      appSettings: [
        { name: 'AzureWebJobsStorage__accountName', value: storage.name }
        { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
        { name: 'AzureWebJobsStorage__clientId', value: identity.properties.clientId }
        { name: 'AZURE_CLIENT_ID', value: identity.properties.clientId }
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: appInsights.properties.ConnectionString }
        { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'ClientId=${identity.properties.clientId};Authorization=AAD' }
        { name: 'KEY_VAULT_URL', value: vault.properties.vaultUri }
        { name: 'WHARF_PUBLISHER', value: 'servicebus' }
        { name: 'SERVICEBUS_FULLY_QUALIFIED_NAMESPACE', value: '${serviceBus.name}.servicebus.windows.net' }
        { name: 'SERVICEBUS_TOPIC', value: 'wharf-events' }
        { name: 'WHARF_CATALOG_PATH', value: 'partners.yaml' }
        { name: 'POLL_QUEUE', value: 'poll-requests' }
        { name: 'LANDED_QUEUE', value: 'file-landed' }
        { name: 'WHARF_EVENTS_QUEUE', value: 'wharf-events' }
      ]
    }
  }
}

// Role assignments for the app's identity: data-plane only, least privilege per service.
var roles = {
  blobOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // Storage Blob Data Owner (Functions host + data)
  queueContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // Storage Queue Data Contributor
  tableContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3' // Storage Table Data Contributor
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6' // Key Vault Secrets User
  serviceBusSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39' // Azure Service Bus Data Sender
  monitoringPublisher: '3913510d-42f4-4e42-8a64-420c390055eb' // Monitoring Metrics Publisher
}

resource blobRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.blobOwner)
  scope: storage
  properties: { principalId: identity.properties.principalId, principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobOwner) }
}
resource queueRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.queueContributor)
  scope: storage
  properties: { principalId: identity.properties.principalId, principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.queueContributor) }
}
resource tableRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.tableContributor)
  scope: storage
  properties: { principalId: identity.properties.principalId, principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.tableContributor) }
}
resource vaultRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identity.id, roles.keyVaultSecretsUser)
  scope: vault
  properties: { principalId: identity.properties.principalId, principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser) }
}
resource busRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(serviceBus.id, identity.id, roles.serviceBusSender)
  scope: serviceBus
  properties: { principalId: identity.properties.principalId, principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusSender) }
}
resource monitorRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identity.id, roles.monitoringPublisher)
  scope: appInsights
  properties: { principalId: identity.properties.principalId, principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringPublisher) }
}

output AZURE_FUNCTION_APP_NAME string = functionApp.name
output AZURE_KEY_VAULT_URL string = vault.properties.vaultUri
output AZURE_STORAGE_ACCOUNT string = storage.name

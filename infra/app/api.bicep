// The Flex Consumption plan and function app (Python), its app settings, and the hygiene checkov asks for.
// Storage is reached by identity only: AzureWebJobsStorage__{blob,queue,table}ServiceUri + __credential +
// __clientId serve the host, the Durable task hub (queues + tables + leases) and every trigger binding with
// connection="AzureWebJobsStorage"; the app's own SDK clients use __accountName and AZURE_CLIENT_ID.
param name string
param planName string
param location string
param tags object = {}
param serviceName string = 'api'
param runtimeName string = 'python'
param runtimeVersion string = '3.11'
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048
param storageAccountName string
param deploymentStorageContainerName string
param applicationInsightsName string
param identityId string
param identityClientId string
param virtualNetworkSubnetId string = ''
@description('Settings of the app itself (names from shared/settings.py); merged over the base settings below.')
param appSettings object = {}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

var storageSettings = {
  AzureWebJobsStorage__accountName: storage.name
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
}

var baseAppSettings = {
  // DefaultAzureCredential in the app (Key Vault, Service Bus, storage SDK clients) picks the user-assigned identity.
  AZURE_CLIENT_ID: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // The worker's OpenTelemetry context: Wharf's spans nest under the host's invocation spans.
  PYTHON_ENABLE_OPENTELEMETRY: 'true'
}

var allAppSettings = union(appSettings, storageSettings, baseAppSettings)

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225:zone redundancy on Flex Consumption is region-dependent and billed as always-ready instances; off for the default (dev) environment
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222:public network access stays on: the HTTP API (health, jobs, poll, replay; function keys) and the Event Grid webhook of the blob triggers are called from outside
  // checkov:skip=CKV_AZURE_17:no client certificates: the HTTP API authenticates callers with function keys and partners never call in
  // checkov:skip=CKV_AZURE_212:Flex Consumption scales from zero by design; set always-ready instances per environment if a warm instance is worth its cost
  // checkov:skip=CKV_AZURE_213:no platform health check: Flex Consumption manages its instances itself; /api/health (and /api/health/details) are there for external probes
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    virtualNetworkSubnetId: !empty(virtualNetworkSubnetId) ? virtualNetworkSubnetId : null
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentStorageContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: runtimeName
        version: runtimeVersion
      }
    }
    siteConfig: {
      ftpsState: 'Disabled'
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      http20Enabled: true
      appSettings: [for setting in items(allAppSettings): {
        name: setting.key
        value: setting.value
      }]
    }
  }
}

// Basic (user name + password) publishing off for FTP and SCM: azd deploys with Entra ID (One Deploy).
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = functionApp.name
output id string = functionApp.id
output url string = 'https://${functionApp.properties.defaultHostName}'

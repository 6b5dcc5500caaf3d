// Wharf on Azure (azd): a Flex Consumption function app (Python 3.11) with a user-assigned identity and
// identity-based connections only; storage (every container, queue with its -poison twin, and table the app
// uses: shared/resources.py), Key Vault for partner credentials, a Service Bus topic with a subscription for
// events, Log Analytics + Application Insights (local auth off), diagnostic settings, an Event Grid system
// topic for the Event Grid blob triggers, alert rules, a workbook and saved queries, and an optional VNet with
// a NAT gateway for a static outbound IP. Laid out like the Azure-Samples azd Flex Consumption templates:
// subscription scope, one resource group, modules under app/ (docs/decisions.md 70).
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; hashed into every resource name.')
param environmentName string

@minLength(1)
@description('Primary location for all resources; Flex Consumption regions only.')
@allowed([
  'australiaeast'
  'australiasoutheast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'eastus2euap'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'southindia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'ukwest'
  'westcentralus'
  'westeurope'
  'westus'
  'westus2'
  'westus3'
])
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the person (or CI principal) running azd: gets data roles to write partner secrets to the vault, drop files and read jobs. azd fills it with the signed-in user (AZURE_PRINCIPAL_ID). Empty: none.')
param principalId string = ''

@description('Type of principalId: User for a person, ServicePrincipal for a pipeline.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

@description('Integrate the app with a VNet whose outbound traffic leaves through a NAT gateway with one static public IP (what SFTP partners allow-list).')
param vnetEnabled bool = false

@description('Flex Consumption: most instances the app scales out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Flex Consumption: memory of one instance.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Key Vault purge protection. Off by default so `azd down --purge` then `azd up` works in a dev environment; turn it on for production (the name is then held for the retention period after deletion).')
param keyVaultPurgeProtection bool = false

@description('recover: bring back a soft-deleted vault of the same name (after `azd down` without --purge) with its secrets.')
@allowed([
  'default'
  'recover'
])
param keyVaultCreateMode string = 'default'

@description('E-mail address the alert rules notify. Empty: the action group is created without a receiver.')
param alertEmail string = ''

@description('Alert: failed jobs in 15 minutes (per partner) above which it fires.')
@minValue(0)
param failedJobsThreshold int = 3

@description('Alert: minutes a partner breaker may stay open before it fires.')
@minValue(5)
param breakerOpenMinutes int = 30

@description('Alert: days before a secret or certificate expires when it fires.')
@minValue(1)
param secretExpiryDays int = 14

param resourceGroupName string = ''
param apiServiceName string = ''

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = !empty(apiServiceName) ? apiServiceName : '${abbrs.webSitesFunctions}wharf-${resourceToken}'
var deploymentStorageContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'
var storageAccountName = '${abbrs.storageStorageAccounts}wharf${take(resourceToken, 13)}'
var serviceBusNamespaceName = '${abbrs.serviceBusNamespaces}wharf-${resourceToken}'
var eventsTopicName = 'wharf-events'

// Names the app uses; shared/resources.py is the list, tests/unit/test_infra_resources.py keeps these equal.
var containers = [
  'inbound'
  'drop'
  'processed'
  'quarantine'
  'archive'
  'outbound'
  'reports'
  'staging'
  'locks'
]
var pollQueue = 'poll-requests'
var landedQueue = 'file-landed'
var eventsQueue = 'wharf-events'
var transferBatchesQueue = 'transfer-batches'
var redeliveryQueue = 'redeliveries'
var queues = [
  pollQueue
  landedQueue
  transferBatchesQueue
  redeliveryQueue
  eventsQueue
  '${pollQueue}-poison'
  '${landedQueue}-poison'
  '${transferBatchesQueue}-poison'
  '${redeliveryQueue}-poison'
]
var tables = [
  'IntegrationJob'
  'FileTransfer'
  'IntegrationLog'
  'JobEvents'
  'Ledger'
  'Breakers'
  'Deliveries'
  'SlaWindows'
  'JobsByTime'
  'PartnerKeys'
  'LastPolls'
]

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}wharf-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}wharf-${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}wharf-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: storageAccountName
    location: location
    tags: tags
    containers: concat([deploymentStorageContainerName], containers)
    queues: queues
    tables: tables
    logAnalyticsId: monitoring.outputs.logAnalyticsId
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: '${abbrs.keyVaultVaults}wharf-${take(resourceToken, 13)}'
    location: location
    tags: tags
    purgeProtection: keyVaultPurgeProtection
    createMode: keyVaultCreateMode
    logAnalyticsId: monitoring.outputs.logAnalyticsId
  }
}

module serviceBus 'app/servicebus.bicep' = {
  name: 'servicebus'
  scope: rg
  params: {
    name: serviceBusNamespaceName
    location: location
    tags: tags
    topicName: eventsTopicName
    subscriptionName: 'wharf-consumers'
    logAnalyticsId: monitoring.outputs.logAnalyticsId
  }
}

module network 'app/vnet.bicep' = if (vnetEnabled) {
  name: 'network'
  scope: rg
  params: {
    vnetName: '${abbrs.networkVirtualNetworks}wharf-${resourceToken}'
    natGatewayName: '${abbrs.networkNatGateways}wharf-${resourceToken}'
    publicIpName: '${abbrs.networkPublicIPAddresses}wharf-outbound-${resourceToken}'
    location: location
    tags: tags
  }
}

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}wharf-${resourceToken}'
    location: location
    tags: tags
    serviceName: 'api'
    runtimeName: 'python'
    runtimeVersion: '3.11'
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    storageAccountName: storage.outputs.name
    deploymentStorageContainerName: deploymentStorageContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    virtualNetworkSubnetId: vnetEnabled ? network.outputs.appSubnetId : ''
    appSettings: {
      KEY_VAULT_URL: keyVault.outputs.uri
      WHARF_PUBLISHER: 'servicebus'
      SERVICEBUS_FULLY_QUALIFIED_NAMESPACE: serviceBus.outputs.fullyQualifiedNamespace
      SERVICEBUS_TOPIC: eventsTopicName
      WHARF_CATALOG_PATH: 'partners.yaml'
      POLL_QUEUE: pollQueue
      LANDED_QUEUE: landedQueue
      WHARF_EVENTS_QUEUE: eventsQueue
      TRANSFER_QUEUE: transferBatchesQueue
      REDELIVERY_QUEUE: redeliveryQueue
      // no OTEL_SERVICE_NAME: the exporter's cloud_RoleName is then WEBSITE_SITE_NAME, the app's own name
    }
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    serviceBusNamespaceName: serviceBus.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    appPrincipalId: identity.outputs.principalId
    userPrincipalId: principalId
    userPrincipalType: principalType
  }
}

module eventGrid 'app/eventgrid.bicep' = {
  name: 'eventgrid'
  scope: rg
  params: {
    name: '${abbrs.eventGridSystemTopics}wharf-${resourceToken}'
    location: location
    tags: tags
    storageAccountName: storage.outputs.name
  }
}

module alerts 'app/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    location: location
    tags: tags
    actionGroupName: '${abbrs.insightsActionGroups}wharf-${resourceToken}'
    alertEmail: alertEmail
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    failedJobsThreshold: failedJobsThreshold
    breakerOpenMinutes: breakerOpenMinutes
    secretExpiryDays: secretExpiryDays
  }
}

module workbook 'app/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    location: location
    tags: tags
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    queryPackName: '${abbrs.operationalInsightsQueryPacks}wharf-${resourceToken}'
  }
}

// azd writes these into .azure/<env>/.env; scripts/azd/postdeploy.sh reads them.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output AZURE_FUNCTION_APP_URL string = api.outputs.url
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_URL string = keyVault.outputs.uri
output AZURE_SERVICEBUS_NAMESPACE string = serviceBus.outputs.fullyQualifiedNamespace
output AZURE_EVENTGRID_SYSTEM_TOPIC_NAME string = eventGrid.outputs.name
output AZURE_OUTBOUND_IP string = vnetEnabled ? network.outputs.outboundIp : ''
output APPLICATIONINSIGHTS_CONNECTION_STRING string = monitoring.outputs.applicationInsightsConnectionString
output SERVICE_API_NAME string = api.outputs.name

// Key Vault for partner credentials (RBAC, no access policies). Purge protection is a parameter (off for dev so
// `azd down --purge` + `azd up` can reuse the name); createMode 'recover' restores a soft-deleted vault of the
// same name with its secrets. The AuditEvent diagnostic setting records every read of a partner credential.
param name string
param location string
param tags object = {}
param purgeProtection bool = false
@allowed([
  'default'
  'recover'
])
param createMode string = 'default'
param logAnalyticsId string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109:no IP firewall: a Flex Consumption app without a VNet has no fixed outbound addresses; access is RBAC-only and every read is audited (diagnostic setting below)
  // checkov:skip=CKV_AZURE_189:public network access on, for the same reason (see CKV_AZURE_109)
  // checkov:skip=CKV_AZURE_110:purge protection is the keyVaultPurgeProtection parameter, off by default so `azd down --purge` + `azd up` works in dev; turn it on for production
  // checkov:skip=CKV_AZURE_42:soft delete is on (7 days); full recoverability needs purge protection (see CKV_AZURE_110)
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    createMode: createMode
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    // ARM rejects `false` once purge protection was on; null leaves it off.
    enablePurgeProtection: purgeProtection ? true : null
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource vaultDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-to-log-analytics'
  scope: vault
  properties: {
    workspaceId: logAnalyticsId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri

// The output storage: one account, one container of append blobs (one stdout and one stderr
// blob per target and run), a lifecycle rule that deletes old output, and the role assignment
// that lets the VMs' identity write there (managed-identity blob mode).
// Shared keys are off: azrun signs SAS URLs with a user-delegation key (Entra ID), and the
// VMs authenticate with their managed identity.

@description('Azure region.')
param location string

@description('Storage account name (3-24 lowercase letters and digits, globally unique).')
@minLength(3)
@maxLength(24)
param accountName string

@description('Container for run output.')
param containerName string = 'azrun-output'

@description('Delete output blobs this many days after their last write.')
@minValue(1)
param retentionDays int = 7

@description('Principal id of the identity attached to the VMs (gets Storage Blob Data Contributor on the container).')
param vmIdentityPrincipalId string

@description('Tags for every resource.')
param tags object = {}

// Built-in role, the same id in every tenant.
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: accountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource container 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: containerName
  properties: {
    publicAccess: 'None'
  }
}

resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'expire-azrun-output'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'appendBlob'
                'blockBlob'
              ]
              prefixMatch: [
                '${containerName}/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: retentionDays
                }
              }
            }
          }
        }
      ]
    }
  }
}

resource vmBlobWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(container.id, vmIdentityPrincipalId, storageBlobDataContributor)
  scope: container
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: vmIdentityPrincipalId
    principalType: 'ServicePrincipal'
    description: 'azrun: VMs write run-command output blobs with their managed identity'
  }
}

output accountName string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output containerName string = container.name
output containerUrl string = '${account.properties.primaryEndpoints.blob}${container.name}'

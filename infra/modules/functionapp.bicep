// A Python Function App (Flex Consumption, Linux) that runs azrun as the runner identity:
// a timer trigger and an HTTP trigger (examples/functions). The app settings are azrun's
// own AZRUN_* variables, so the function code only calls azrun.Fleet.from_env().
// The Functions host keeps its state in a storage account of its own, reached with the same
// identity (no keys): AzureWebJobsStorage__* identity-based connection settings.

@description('Azure region.')
param location string

@description('Name prefix.')
param prefix string

@description('Resource id of the runner identity.')
param runnerIdentityId string

@description('Client id of the runner identity (AZRUN_CLIENT_ID).')
param runnerClientId string

@description('Principal id of the runner identity (gets data access to the host storage account).')
param runnerPrincipalId string

@description('Output container URL (AZRUN_OUTPUT_CONTAINER).')
param outputContainerUrl string

@description('Client id of the identity on the VMs that writes output blobs (AZRUN_BLOB_IDENTITY).')
param blobIdentityClientId string

@description('Tag selector the timer trigger runs on, KEY=VALUE.')
param targetTag string

@description('NCRONTAB schedule of the timer trigger (six fields, UTC).')
param schedule string = '0 0 3 * * *'

@description('Tags for every resource.')
param tags object = {}

var suffix = uniqueString(resourceGroup().id)
var deploymentContainer = 'app-package'
// Built-in role, the same id in every tenant.
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'

resource hostStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'st${take(prefix, 6)}fn${suffix}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
}

resource hostBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: hostStorage
  name: 'default'
}

resource packageContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: hostBlobs
  name: deploymentContainer
}

resource hostDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, runnerPrincipalId, storageBlobDataOwner)
  scope: hostStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: runnerPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Functions host storage (packages, timer leases) for the azrun function app'
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${prefix}-${suffix}'
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

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: 'func-${prefix}-${suffix}'
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${runnerIdentityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${hostStorage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: runnerIdentityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: 40
        instanceMemoryMB: 2048
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
  dependsOn: [
    packageContainer
    hostDataOwner
  ]
}

resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: {
    AzureWebJobsStorage__accountName: hostStorage.name
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: runnerClientId
    AZURE_SUBSCRIPTION_ID: subscription().subscriptionId
    AZRUN_AUTH: 'msi'
    AZRUN_CLIENT_ID: runnerClientId
    AZRUN_OUTPUT_CONTAINER: outputContainerUrl
    AZRUN_BLOB_IDENTITY: blobIdentityClientId
    // The ledger is per instance and short-lived here; each invocation is one complete run.
    AZRUN_STATE_DIR: '/tmp/azrun'
    AZRUN_TARGET_TAG: targetTag
    AZRUN_SCHEDULE: schedule
  }
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName

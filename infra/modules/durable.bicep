// The durable engine (azrun.durable): an Azure Durable Task Scheduler with one task hub, and
// `azrun worker` replicas on Azure Container Apps that serve it as the runner identity.
//
// The workers read the same AZRUN_* settings as every other azrun process (identity, output
// container, blob identity) plus AZRUN_DURABLE_ENDPOINT / AZRUN_DURABLE_TASKHUB. The runner
// identity gets the "Durable Task Worker" role on the task hub (process orchestrations and
// activities); whoever schedules, watches and cancels runs (operatorPrincipalId) gets
// "Durable Task Data Contributor". ARM and blob permissions are the runner's custom role and
// storage roles, granted elsewhere (role.bicep, storage.bicep): a worker does exactly what
// `azrun run` does.

@description('Azure region.')
param location string

@description('Name prefix.')
param prefix string

@description('Resource id of the runner identity (the workers run as it).')
param runnerIdentityId string

@description('Client id of the runner identity (AZRUN_CLIENT_ID).')
param runnerClientId string

@description('Principal id of the runner identity (gets the Durable Task Worker role).')
param runnerPrincipalId string

@description('Output container URL (AZRUN_OUTPUT_CONTAINER): plans, results and output of durable runs.')
param outputContainerUrl string

@description('Client id of the identity on the VMs that writes output blobs (AZRUN_BLOB_IDENTITY).')
param blobIdentityClientId string

@description('Object id of who schedules and watches durable runs (Durable Task Data Contributor). Empty: none.')
param operatorPrincipalId string = ''

@description('Type of operatorPrincipalId.')
param operatorPrincipalType string = 'User'

@description('Task hub name (AZRUN_DURABLE_TASKHUB).')
param taskHubName string = 'azrun'

@description('Scheduler SKU: Consumption (pay per use) or Dedicated.')
@allowed([
  'Consumption'
  'Dedicated'
])
param schedulerSku string = 'Consumption'

@description('Container image with Python 3.10+ (azrun is installed into it at start).')
param workerImage string = 'mcr.microsoft.com/devcontainers/python:3.11'

@description('What the worker installs with pip (package name, wheel URL or git URL).')
param azrunPipSpec string = 'azrun'

@description('Worker replicas (each serves up to 32 subscriptions of a run at once).')
@minValue(1)
@maxValue(30)
param workerReplicas int = 2

@description('Tags for every resource.')
param tags object = {}

var suffix = uniqueString(resourceGroup().id)
// Built-in roles, the same ids in every tenant.
var durableTaskWorker = '80d0d6b0-f522-40a4-8886-a5a11720c375'
var durableTaskDataContributor = '0ad04412-c4d5-4796-b79c-f76d14c8d402'

resource scheduler 'Microsoft.DurableTask/schedulers@2025-11-01' = {
  name: 'dts-${prefix}-${suffix}'
  location: location
  tags: tags
  properties: {
    sku: {
      name: schedulerSku
    }
    // an empty allow list denies every caller; the task hub's RBAC is the gate
    ipAllowlist: [
      '0.0.0.0/0'
    ]
  }
}

resource taskHub 'Microsoft.DurableTask/schedulers/taskHubs@2025-11-01' = {
  parent: scheduler
  name: taskHubName
}

resource workerRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(taskHub.id, runnerPrincipalId, durableTaskWorker)
  scope: taskHub
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', durableTaskWorker)
    principalId: runnerPrincipalId
    principalType: 'ServicePrincipal'
    description: 'azrun worker: processes the orchestrations and activities of durable runs'
  }
}

resource operatorRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(taskHub.id, operatorPrincipalId, durableTaskDataContributor)
  scope: taskHub
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', durableTaskDataContributor)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    description: 'azrun durable run / status / cancel / runs'
  }
}

resource environment 'Microsoft.App/managedEnvironments@2024-03-01' = {
  name: 'cae-${prefix}-${suffix}'
  location: location
  tags: tags
  properties: {
    workloadProfiles: [
      {
        name: 'Consumption'
        workloadProfileType: 'Consumption'
      }
    ]
  }
}

resource workers 'Microsoft.App/containerApps@2024-03-01' = {
  name: 'ca-${prefix}-worker'
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${runnerIdentityId}': {}
    }
  }
  properties: {
    environmentId: environment.id
    workloadProfileName: 'Consumption'
    configuration: {
      activeRevisionsMode: 'Single'
    }
    template: {
      containers: [
        {
          name: 'azrun-worker'
          image: workerImage
          command: [
            'sh'
            '-c'
            'pip install --quiet "${azrunPipSpec}" && exec azrun worker'
          ]
          resources: {
            cpu: json('1.0')
            memory: '2Gi'
          }
          env: [
            {
              name: 'AZRUN_DURABLE_ENDPOINT'
              value: scheduler.properties.endpoint
            }
            {
              name: 'AZRUN_DURABLE_TASKHUB'
              value: taskHub.name
            }
            {
              name: 'AZRUN_CLIENT_ID'
              value: runnerClientId
            }
            {
              name: 'AZRUN_AUTH'
              value: 'msi'
            }
            {
              name: 'AZRUN_OUTPUT_CONTAINER'
              value: outputContainerUrl
            }
            {
              name: 'AZRUN_BLOB_IDENTITY'
              value: blobIdentityClientId
            }
          ]
        }
      ]
      // a fixed pool: a worker that scales in mid-tick is a worker that died (its tick is
      // handed to another one), which is safe but wasteful
      scale: {
        minReplicas: workerReplicas
        maxReplicas: workerReplicas
      }
    }
  }
  dependsOn: [
    workerRole
  ]
}

output schedulerEndpoint string = scheduler.properties.endpoint
output taskHubName string = taskHub.name
output workerAppName string = workers.name

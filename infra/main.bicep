// azrun test infrastructure: everything azrun's live tests (tests/live) and examples
// (examples/functions, examples/automation) run against. Deploy at subscription scope:
//
//   az deployment sub create --location westeurope --template-file infra/main.bicep \
//     --parameters infra/main.bicepparam
//
// See infra/README.md for what is created, what it costs, and how to tear it down.
targetScope = 'subscription'

@description('Azure region for every resource.')
param location string = deployment().location

@description('Resource group to create (everything goes in it; delete it to tear down).')
param resourceGroupName string = 'rg-azrun-test'

@description('Short name prefix: 2-8 lowercase letters or digits (used in storage account names).')
@minLength(2)
@maxLength(8)
param prefix string = 'azrun'

@description('Tag (name and value) that marks the test machines; azrun selects on it.')
param testTagName string = 'azrun-test'

@description('Value of the test tag.')
param testTagValue string = 'true'

@description('Number of standalone Linux VMs.')
@minValue(0)
@maxValue(10)
param vmCount int = 2

@description('Instances in each of the two scale sets (Uniform and Flexible).')
@minValue(1)
@maxValue(10)
param scaleSetCapacity int = 2

@description('VM size of every machine.')
param vmSize string = 'Standard_B1s'

@description('Admin user name of the Linux machines.')
param adminUsername string = 'azrunadmin'

@description('SSH public key of the admin user (no SSH port is opened).')
param sshPublicKey string

@description('Days before output blobs are deleted by the lifecycle rule.')
@minValue(1)
param outputRetentionDays int = 7

@description('Display name of the custom role (must be unique in the tenant).')
param roleName string = 'azrun runner (${resourceGroupName}, ${take(subscription().subscriptionId, 8)})'

@description('Object id of a user (or group / service principal) to give the azrun role too, e.g. yours for the live tests. Empty: none.')
param operatorPrincipalId string = ''

@description('Type of operatorPrincipalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'User'

@description('Deploy the Function App example host.')
param deployFunctionApp bool = true

@description('Deploy the Automation account with the runbook.')
param deployAutomation bool = true

@description('Deploy a Linux Hybrid Runbook Worker VM for the runbook (one more VM).')
param deployHybridWorker bool = false

@description('Deploy the durable engine: a Durable Task Scheduler and `azrun worker` replicas on Container Apps.')
param deployDurable bool = false

@description('Worker replicas of the durable engine.')
@minValue(1)
@maxValue(30)
param durableWorkerReplicas int = 2

@description('What the hybrid worker installs with pip (package name, wheel URL or git URL).')
param azrunPipSpec string = 'azrun'

var commonTags = {
  purpose: 'azrun-test'
}
var machineTags = union(commonTags, {
  '${testTagName}': testTagValue
})
var suffix = uniqueString(subscription().id, resourceGroupName)

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: resourceGroupName
  location: location
  tags: commonTags
}

module identity 'modules/identity.bicep' = {
  scope: rg
  name: 'azrun-identity'
  params: {
    location: location
    prefix: prefix
    tags: commonTags
  }
}

module storage 'modules/storage.bicep' = {
  scope: rg
  name: 'azrun-storage'
  params: {
    location: location
    accountName: 'st${take(prefix, 6)}out${take(suffix, 13)}'
    containerName: 'azrun-output'
    retentionDays: outputRetentionDays
    vmIdentityPrincipalId: identity.outputs.vmOutputPrincipalId
    tags: commonTags
  }
}

module role 'modules/role.bicep' = {
  scope: rg
  name: 'azrun-role'
  params: {
    roleName: roleName
    runnerPrincipalId: identity.outputs.runnerPrincipalId
    extraPrincipalId: operatorPrincipalId
    extraPrincipalType: operatorPrincipalType
  }
}

module fleet 'modules/fleet.bicep' = {
  scope: rg
  name: 'azrun-fleet'
  params: {
    location: location
    prefix: prefix
    vmCount: vmCount
    scaleSetCapacity: scaleSetCapacity
    vmSize: vmSize
    adminUsername: adminUsername
    sshPublicKey: sshPublicKey
    vmIdentityId: identity.outputs.vmOutputId
    tags: machineTags
  }
}

module functionApp 'modules/functionapp.bicep' = if (deployFunctionApp) {
  scope: rg
  name: 'azrun-functionapp'
  params: {
    location: location
    prefix: prefix
    runnerIdentityId: identity.outputs.runnerId
    runnerClientId: identity.outputs.runnerClientId
    runnerPrincipalId: identity.outputs.runnerPrincipalId
    outputContainerUrl: storage.outputs.containerUrl
    blobIdentityClientId: identity.outputs.vmOutputClientId
    targetTag: '${testTagName}=${testTagValue}'
    tags: commonTags
  }
}

module automation 'modules/automation.bicep' = if (deployAutomation) {
  scope: rg
  name: 'azrun-automation'
  params: {
    location: location
    prefix: prefix
    runnerIdentityId: identity.outputs.runnerId
    runnerClientId: identity.outputs.runnerClientId
    outputContainerUrl: storage.outputs.containerUrl
    blobIdentityClientId: identity.outputs.vmOutputClientId
    targetTag: '${testTagName}=${testTagValue}'
    deployHybridWorker: deployHybridWorker
    subnetId: fleet.outputs.subnetId
    vmSize: vmSize
    adminUsername: adminUsername
    sshPublicKey: sshPublicKey
    azrunPipSpec: azrunPipSpec
    tags: commonTags
  }
}

module durable 'modules/durable.bicep' = if (deployDurable) {
  scope: rg
  name: 'azrun-durable'
  params: {
    location: location
    prefix: prefix
    runnerIdentityId: identity.outputs.runnerId
    runnerClientId: identity.outputs.runnerClientId
    runnerPrincipalId: identity.outputs.runnerPrincipalId
    outputContainerUrl: storage.outputs.containerUrl
    blobIdentityClientId: identity.outputs.vmOutputClientId
    operatorPrincipalId: operatorPrincipalId
    operatorPrincipalType: operatorPrincipalType
    azrunPipSpec: azrunPipSpec
    workerReplicas: durableWorkerReplicas
    tags: commonTags
  }
}

output resourceGroupName string = rg.name
output subscriptionId string = subscription().subscriptionId
output outputContainerUrl string = storage.outputs.containerUrl
output runnerClientId string = identity.outputs.runnerClientId
output blobIdentityClientId string = identity.outputs.vmOutputClientId
output roleDefinitionId string = role.outputs.roleDefinitionId
output targetTag string = '${testTagName}=${testTagValue}'
output machineCount int = fleet.outputs.machineCount
output functionAppName string = deployFunctionApp ? functionApp!.outputs.name : ''
output automationAccountName string = deployAutomation ? automation!.outputs.name : ''
output durableEndpoint string = deployDurable ? durable!.outputs.schedulerEndpoint : ''
output durableTaskHub string = deployDurable ? durable!.outputs.taskHubName : ''
// Paste into $XDG_CONFIG_HOME/azrun/config.toml (see infra/README.md).
output azrunConfigToml string = join(
  [
    'subscription = "${subscription().subscriptionId}"'
    'output_container = "${storage.outputs.containerUrl}"'
    'blob_identity = "${identity.outputs.vmOutputClientId}"'
  ],
  '\n'
)

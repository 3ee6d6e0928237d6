// The custom least-privilege role for the identity that runs azrun, and its assignments.
// The action lists are exactly azrun.permissions.ACTIONS / DATA_ACTIONS (tests/test_infra.py
// compares them); change both together.
// The role is defined and assigned at this resource group, which holds the test fleet and the
// output storage account: the runner can touch nothing outside it.

@description('Display name of the role (unique in the tenant).')
param roleName string

@description('Principal id of the runner identity (user-assigned, a service principal).')
param runnerPrincipalId string

@description('Optional extra principal to give the role, e.g. your own user object id to run azrun from a laptop. Empty: none.')
param extraPrincipalId string = ''

@description('Type of extraPrincipalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param extraPrincipalType string = 'User'

resource runnerRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, 'azrun-runner-role')
  properties: {
    roleName: roleName
    description: 'azrun: select VMs and scale-set instances, run managed run commands on them, and read and write their output blobs.'
    type: 'customRole'
    assignableScopes: [
      resourceGroup().id
    ]
    permissions: [
      {
        actions: [
          'Microsoft.Compute/virtualMachines/read'
          'Microsoft.Compute/virtualMachines/instanceView/read'
          'Microsoft.Compute/virtualMachineScaleSets/read'
          'Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read'
          'Microsoft.Compute/virtualMachineScaleSets/virtualMachines/instanceView/read'
          'Microsoft.Compute/virtualMachines/runCommands/read'
          'Microsoft.Compute/virtualMachines/runCommands/write'
          'Microsoft.Compute/virtualMachines/runCommands/delete'
          'Microsoft.Compute/virtualMachineScaleSets/virtualMachines/runCommands/read'
          'Microsoft.Compute/virtualMachineScaleSets/virtualMachines/runCommands/write'
          'Microsoft.Compute/virtualMachineScaleSets/virtualMachines/runCommands/delete'
          'Microsoft.Compute/locations/runCommands/read'
          'Microsoft.Compute/locations/operations/read'
          'Microsoft.Resources/subscriptions/resources/read'
          'Microsoft.Resources/subscriptions/resourceGroups/read'
          'Microsoft.Resources/subscriptions/read'
          'Microsoft.Storage/storageAccounts/blobServices/containers/read'
          'Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action'
        ]
        notActions: []
        dataActions: [
          'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read'
          'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write'
          'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/add/action'
        ]
        notDataActions: []
      }
    ]
  }
}

resource runnerAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, runnerPrincipalId, runnerRole.id)
  properties: {
    roleDefinitionId: runnerRole.id
    principalId: runnerPrincipalId
    principalType: 'ServicePrincipal'
    description: 'azrun runner identity'
  }
}

resource extraAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(extraPrincipalId)) {
  name: guid(resourceGroup().id, extraPrincipalId, runnerRole.id)
  properties: {
    roleDefinitionId: runnerRole.id
    principalId: extraPrincipalId
    principalType: extraPrincipalType
    description: 'azrun operator (live tests)'
  }
}

output roleDefinitionId string = runnerRole.id
output roleName string = roleName

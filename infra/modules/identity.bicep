// Two user-assigned identities, so each can be given exactly what it needs:
//  - runner:     the identity azrun runs as (Function App, Automation account, hybrid worker);
//                gets the custom "azrun runner" role (role.bicep).
//  - vm-output:  attached to every test VM and scale set; the run-command handler uses it to
//                write output blobs (managed-identity blob mode); gets Storage Blob Data
//                Contributor on the output container only (storage.bicep).

@description('Azure region.')
param location string

@description('Name prefix for the identities.')
param prefix string

@description('Tags for every resource.')
param tags object = {}

resource runner 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${prefix}-runner'
  location: location
  tags: tags
}

resource vmOutput 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${prefix}-vm-output'
  location: location
  tags: tags
}

output runnerId string = runner.id
output runnerClientId string = runner.properties.clientId
output runnerPrincipalId string = runner.properties.principalId
output vmOutputId string = vmOutput.id
output vmOutputClientId string = vmOutput.properties.clientId
output vmOutputPrincipalId string = vmOutput.properties.principalId

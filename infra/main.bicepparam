// Example parameters: copy, edit, and pass with --parameters.
//   export AZRUN_SSH_PUBLIC_KEY="$(cat ~/.ssh/id_rsa.pub)"
//   export AZRUN_OPERATOR_ID="$(az ad signed-in-user show --query id -o tsv)"
using './main.bicep'

param resourceGroupName = 'rg-azrun-test'
param prefix = 'azrun'
param vmCount = 2
param scaleSetCapacity = 2
param vmSize = 'Standard_B1s'
param sshPublicKey = readEnvironmentVariable('AZRUN_SSH_PUBLIC_KEY')
param operatorPrincipalId = readEnvironmentVariable('AZRUN_OPERATOR_ID', '')
param deployFunctionApp = true
param deployAutomation = true
param deployHybridWorker = false

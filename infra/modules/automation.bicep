// An Azure Automation account running as the runner identity, with a Python runbook
// (examples/automation/runbook.py) and the azrun settings as Automation variables.
//
// azrun needs Python >= 3.11, and Automation's cloud sandboxes offer Python 3.8 and 3.10, so
// the runbook runs on a Linux Hybrid Runbook Worker: an Ubuntu 24.04 VM (Python 3.12) with
// azrun installed in /opt/azrun/venv by cloud-init, and the runner identity attached (on a
// hybrid worker, "managed identity" means the worker VM's identity, through IMDS).
// The worker is optional (deployHybridWorker) because it is one more VM to pay for.

@description('Azure region.')
param location string

@description('Name prefix.')
param prefix string

@description('Resource id of the runner identity.')
param runnerIdentityId string

@description('Client id of the runner identity.')
param runnerClientId string

@description('Output container URL.')
param outputContainerUrl string

@description('Client id of the identity on the VMs that writes output blobs.')
param blobIdentityClientId string

@description('Tag selector the runbook runs on, KEY=VALUE.')
param targetTag string

@description('Deploy a Linux Hybrid Runbook Worker VM (needed to run the runbook: see above).')
param deployHybridWorker bool = false

@description('Subnet for the hybrid worker VM.')
param subnetId string = ''

@description('VM size of the hybrid worker.')
param vmSize string = 'Standard_B1s'

@description('Admin user of the hybrid worker.')
param adminUsername string = 'azrunadmin'

@description('SSH public key of the hybrid worker admin user.')
param sshPublicKey string = ''

@description('What the worker installs with pip: a package name, a wheel URL, or a git URL.')
param azrunPipSpec string = 'azrun'

@description('Tags for every resource.')
param tags object = {}

var suffix = uniqueString(resourceGroup().id)
var settings = {
  AZURE_SUBSCRIPTION_ID: subscription().subscriptionId
  AZRUN_CLIENT_ID: runnerClientId
  AZRUN_OUTPUT_CONTAINER: outputContainerUrl
  AZRUN_BLOB_IDENTITY: blobIdentityClientId
  AZRUN_TARGET_TAG: targetTag
}

resource account 'Microsoft.Automation/automationAccounts@2023-11-01' = {
  name: 'aa-${prefix}-${suffix}'
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${runnerIdentityId}': {}
    }
  }
  properties: {
    sku: {
      name: 'Basic'
    }
    publicNetworkAccess: true
    disableLocalAuth: false
  }
}

// Automation variables hold JSON values: a string variable's value is a quoted JSON string.
resource variables 'Microsoft.Automation/automationAccounts/variables@2023-11-01' = [
  for item in items(settings): {
    parent: account
    name: item.key
    properties: {
      value: '"${item.value}"'
      isEncrypted: false
      description: 'azrun setting'
    }
  }
]

resource runbook 'Microsoft.Automation/automationAccounts/runbooks@2023-11-01' = {
  parent: account
  name: 'azrun-fleet-run'
  location: location
  tags: tags
  properties: {
    runbookType: 'Python3'
    description: 'Run a script on the machines tagged AZRUN_TARGET_TAG with azrun (examples/automation/runbook.py). Publish its content with az automation runbook replace-content + publish.'
    logProgress: false
    logVerbose: false
  }
}

resource workerGroup 'Microsoft.Automation/automationAccounts/hybridRunbookWorkerGroups@2023-11-01' = if (deployHybridWorker) {
  parent: account
  name: 'azrun-workers'
}

resource workerNic 'Microsoft.Network/networkInterfaces@2024-05-01' = if (deployHybridWorker) {
  name: 'nic-${prefix}-worker'
  location: location
  tags: tags
  properties: {
    ipConfigurations: [
      {
        name: 'ipconfig1'
        properties: {
          privateIPAllocationMethod: 'Dynamic'
          subnet: {
            id: subnetId
          }
        }
      }
    ]
  }
}

// cloud-init for the worker; AZRUN_PIP_SPEC is replaced with the azrunPipSpec parameter.
var cloudInit = replace(loadTextContent('worker-cloud-init.yaml'), 'AZRUN_PIP_SPEC', azrunPipSpec)

resource workerVm 'Microsoft.Compute/virtualMachines@2024-07-01' = if (deployHybridWorker) {
  name: 'vm-${prefix}-worker'
  location: location
  // Not tagged with the selector tag: the worker runs azrun, it is not one of its targets.
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${runnerIdentityId}': {}
    }
  }
  properties: {
    hardwareProfile: {
      vmSize: vmSize
    }
    osProfile: {
      computerName: 'vm-${prefix}-worker'
      adminUsername: adminUsername
      customData: base64(cloudInit)
      linuxConfiguration: {
        disablePasswordAuthentication: true
        ssh: {
          publicKeys: [
            {
              path: '/home/${adminUsername}/.ssh/authorized_keys'
              keyData: sshPublicKey
            }
          ]
        }
      }
    }
    storageProfile: {
      imageReference: {
        publisher: 'Canonical'
        offer: 'ubuntu-24_04-lts'
        sku: 'server'
        version: 'latest'
      }
      osDisk: {
        createOption: 'FromImage'
        managedDisk: {
          storageAccountType: 'Standard_LRS'
        }
        deleteOption: 'Delete'
      }
    }
    networkProfile: {
      networkInterfaces: [
        {
          id: workerNic.id
          properties: {
            deleteOption: 'Delete'
          }
        }
      ]
    }
  }
}

resource worker 'Microsoft.Automation/automationAccounts/hybridRunbookWorkerGroups/hybridRunbookWorkers@2023-11-01' = if (deployHybridWorker) {
  parent: workerGroup
  name: guid(resourceGroup().id, 'azrun-hybrid-worker')
  properties: {
    vmResourceId: workerVm.id
  }
}

resource workerExtension 'Microsoft.Compute/virtualMachines/extensions@2024-07-01' = if (deployHybridWorker) {
  parent: workerVm
  name: 'HybridWorkerExtension'
  location: location
  properties: {
    publisher: 'Microsoft.Azure.Automation.HybridWorker'
    type: 'HybridWorkerForLinux'
    typeHandlerVersion: '1.1'
    autoUpgradeMinorVersion: true
    enableAutomaticUpgrade: true
    settings: {
      AutomationAccountURL: account.properties.automationHybridServiceUrl
    }
  }
  dependsOn: [
    worker
  ]
}

output name string = account.name
output runbookName string = runbook.name
output hybridWorkerGroup string = deployHybridWorker ? workerGroup.name : ''

// The test fleet: a few Linux VMs, one Uniform and one Flexible scale set, all tagged so that
// `azrun targets --tag azrun-test=true` finds them, all carrying the vm-output identity for
// managed-identity output blobs. No public IPs and no inbound rules: run commands need none.
//
// Outbound: single VMs and Uniform instances get default outbound access (set explicitly on the
// subnet, as new subnets default to private). Flexible scale-set members never get default
// outbound access; the subnet's Microsoft.Storage service endpoint is what lets every machine
// reach the output storage account, and the guest agent fetches extensions through the host.

@description('Azure region.')
param location string

@description('Name prefix.')
param prefix string

@description('Number of standalone Linux VMs.')
@minValue(0)
@maxValue(10)
param vmCount int = 2

@description('Instances in each scale set.')
@minValue(1)
@maxValue(10)
param scaleSetCapacity int = 2

@description('VM size for every machine.')
param vmSize string = 'Standard_B1s'

@description('Admin user name (SSH is never opened; the key is only there because Linux VMs need one).')
param adminUsername string

@description('SSH public key for the admin user.')
param sshPublicKey string

@description('Resource id of the user-assigned identity the machines use to write output blobs.')
param vmIdentityId string

@description('Tags for the machines: include the tag azrun selects on.')
param tags object

@description('Address space of the test network.')
param addressPrefix string = '10.42.0.0/16'

@description('Subnet of the test machines.')
param subnetPrefix string = '10.42.1.0/24'

var image = {
  publisher: 'Canonical'
  offer: 'ubuntu-24_04-lts'
  sku: 'server'
  version: 'latest'
}
var linuxConfiguration = {
  disablePasswordAuthentication: true
  ssh: {
    publicKeys: [
      {
        path: '/home/${adminUsername}/.ssh/authorized_keys'
        keyData: sshPublicKey
      }
    ]
  }
  provisionVMAgent: true
}
var identity = {
  type: 'UserAssigned'
  userAssignedIdentities: {
    '${vmIdentityId}': {}
  }
}
var osDisk = {
  createOption: 'FromImage'
  caching: 'ReadWrite'
  managedDisk: {
    storageAccountType: 'Standard_LRS'
  }
  deleteOption: 'Delete'
}

resource nsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: 'nsg-${prefix}-fleet'
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: 'vnet-${prefix}'
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: 'fleet'
        properties: {
          addressPrefix: subnetPrefix
          defaultOutboundAccess: true
          networkSecurityGroup: {
            id: nsg.id
          }
          serviceEndpoints: [
            {
              service: 'Microsoft.Storage'
            }
          ]
        }
      }
    ]
  }
}

var subnetId = '${vnet.id}/subnets/fleet'

resource nics 'Microsoft.Network/networkInterfaces@2024-05-01' = [
  for i in range(0, vmCount): {
    name: 'nic-${prefix}-${padLeft(i + 1, 3, '0')}'
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
]

resource vms 'Microsoft.Compute/virtualMachines@2024-07-01' = [
  for i in range(0, vmCount): {
    name: 'vm-${prefix}-${padLeft(i + 1, 3, '0')}'
    location: location
    tags: tags
    identity: identity
    properties: {
      hardwareProfile: {
        vmSize: vmSize
      }
      osProfile: {
        computerName: 'vm-${prefix}-${padLeft(i + 1, 3, '0')}'
        adminUsername: adminUsername
        linuxConfiguration: linuxConfiguration
      }
      storageProfile: {
        imageReference: image
        osDisk: osDisk
      }
      networkProfile: {
        networkInterfaces: [
          {
            id: nics[i].id
            properties: {
              deleteOption: 'Delete'
            }
          }
        ]
      }
      diagnosticsProfile: {
        bootDiagnostics: {
          enabled: true
        }
      }
    }
  }
]

resource uniform 'Microsoft.Compute/virtualMachineScaleSets@2024-07-01' = {
  name: 'vmss-${prefix}-uniform'
  location: location
  tags: tags
  identity: identity
  sku: {
    name: vmSize
    tier: 'Standard'
    capacity: scaleSetCapacity
  }
  properties: {
    orchestrationMode: 'Uniform'
    overprovision: false
    upgradePolicy: {
      mode: 'Manual'
    }
    virtualMachineProfile: {
      osProfile: {
        computerNamePrefix: 'u${take(prefix, 8)}'
        adminUsername: adminUsername
        linuxConfiguration: linuxConfiguration
      }
      storageProfile: {
        imageReference: image
        osDisk: {
          createOption: 'FromImage'
          caching: 'ReadWrite'
          managedDisk: {
            storageAccountType: 'Standard_LRS'
          }
        }
      }
      networkProfile: {
        networkInterfaceConfigurations: [
          {
            name: 'nic'
            properties: {
              primary: true
              ipConfigurations: [
                {
                  name: 'ipconfig1'
                  properties: {
                    subnet: {
                      id: subnetId
                    }
                  }
                }
              ]
            }
          }
        ]
      }
      diagnosticsProfile: {
        bootDiagnostics: {
          enabled: true
        }
      }
    }
  }
}

resource flexible 'Microsoft.Compute/virtualMachineScaleSets@2024-07-01' = {
  name: 'vmss-${prefix}-flex'
  location: location
  tags: tags
  identity: identity
  sku: {
    name: vmSize
    tier: 'Standard'
    capacity: scaleSetCapacity
  }
  properties: {
    orchestrationMode: 'Flexible'
    platformFaultDomainCount: 1
    singlePlacementGroup: false
    virtualMachineProfile: {
      osProfile: {
        computerNamePrefix: 'f${take(prefix, 8)}'
        adminUsername: adminUsername
        linuxConfiguration: linuxConfiguration
      }
      storageProfile: {
        imageReference: image
        osDisk: osDisk
      }
      networkProfile: {
        networkApiVersion: '2020-11-01'
        networkInterfaceConfigurations: [
          {
            name: 'nic'
            properties: {
              primary: true
              deleteOption: 'Delete'
              ipConfigurations: [
                {
                  name: 'ipconfig1'
                  properties: {
                    primary: true
                    subnet: {
                      id: subnetId
                    }
                  }
                }
              ]
            }
          }
        ]
      }
      diagnosticsProfile: {
        bootDiagnostics: {
          enabled: true
        }
      }
    }
  }
}

output subnetId string = subnetId
output vmNames array = [for i in range(0, vmCount): vms[i].name]
output uniformScaleSetName string = uniform.name
output flexibleScaleSetName string = flexible.name
output machineCount int = vmCount + 2 * scaleSetCapacity

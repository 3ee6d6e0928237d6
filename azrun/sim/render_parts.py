"""Parts of the local Compute's machine bodies: OS profile, image, OS disk and instance view.

Shapes follow recorded Azure (2023 recordings) and the 2024-11-01 REST specification; Uniform
scale-set profiles carry no patch settings and their OS disks no delete option (recorded).
"""

from __future__ import annotations

from typing import Any

from azrun.sim.model import Machine

CREATED = "2024-06-01T08:00:00.0000000+00:00"
_POWER_DISPLAY = {"running": "VM running", "stopped": "VM stopped", "deallocated": "VM deallocated"}


def os_profile(computer_name: str, os: str, *, scale_set: bool = False) -> dict[str, Any]:
    """A VM's OS profile; Uniform scale sets' carry no patch settings (recorded)."""
    profile: dict[str, Any] = {"computerName": computer_name, "adminUsername": "azureuser"}
    patch = {"patchMode": "ImageDefault" if os != "windows" else "AutomaticByOS", "assessmentMode": "ImageDefault"}
    if os == "windows":
        profile["windowsConfiguration"] = {
            "provisionVMAgent": True,
            "enableAutomaticUpdates": True,
            "enableVMAgentPlatformUpdates": False,
        }
    else:
        profile["linuxConfiguration"] = {
            "disablePasswordAuthentication": True,
            "ssh": {"publicKeys": []},
            "provisionVMAgent": True,
            "enableVMAgentPlatformUpdates": False,
        }
    if not scale_set:
        profile["windowsConfiguration" if os == "windows" else "linuxConfiguration"]["patchSettings"] = patch
    profile["secrets"] = []
    profile["allowExtensionOperations"] = True
    profile["requireGuestProvisionSignal"] = True
    return profile


def image(os: str) -> dict[str, str]:
    if os == "windows":
        return {
            "publisher": "MicrosoftWindowsServer",
            "offer": "WindowsServer",
            "sku": "2022-datacenter-azure-edition",
            "version": "latest",
            "exactVersion": "20348.2700.240906",
        }
    return {
        "publisher": "Canonical",
        "offer": "ubuntu-24_04-lts",
        "sku": "server",
        "version": "latest",
        "exactVersion": "24.04.202409120",
    }


def os_disk(m: Machine) -> dict[str, Any]:
    disk = f"{m.name}_OsDisk_1"
    return {
        "osType": "Windows" if m.os == "windows" else "Linux",
        "name": disk,
        "createOption": "FromImage",
        "caching": "ReadWrite",
        "managedDisk": {
            "storageAccountType": "Premium_LRS",
            "id": f"/subscriptions/{m.subscription_id}/resourceGroups/{m.resource_group}/providers/Microsoft.Compute/disks/{disk}",
        },
        **({} if m.uniform else {"deleteOption": "Delete"}),  # recorded: Uniform instances have none
        "diskSizeGB": 30,
    }


def power_instance_view(m: Machine, computer_name: str) -> dict[str, Any]:
    """``instanceView`` with the statuses clients read: provisioning and power state."""
    view: dict[str, Any] = {
        "computerName": computer_name,
        "osName": "Windows Server 2022 Datacenter" if m.os == "windows" else "ubuntu",
        "osVersion": "10.0.20348" if m.os == "windows" else "24.04",
        "hyperVGeneration": "V2",
        "disks": [
            {
                "name": f"{m.name}_OsDisk_1",
                "statuses": [
                    {
                        "code": "ProvisioningState/succeeded",
                        "level": "Info",
                        "displayStatus": "Provisioning succeeded",
                        "time": CREATED,
                    }
                ],
            }
        ],
        "statuses": [
            {
                "code": "ProvisioningState/succeeded",
                "level": "Info",
                "displayStatus": "Provisioning succeeded",
                "time": CREATED,
            },
            {
                "code": f"PowerState/{m.power}",
                "level": "Info",
                "displayStatus": _POWER_DISPLAY.get(m.power, m.power),
            },
        ],
    }
    if m.power == "running" and not m.agent_ready:
        view["vmAgent"] = {  # what Azure shows for an agent that stopped reporting
            "vmAgentVersion": "Unknown",
            "statuses": [
                {
                    "code": "ProvisioningState/Unavailable",
                    "level": "Warning",
                    "displayStatus": "Not Ready",
                    "message": "VM status blob is found but not yet populated.",
                    "time": CREATED,
                }
            ],
        }
    elif m.power == "running":
        view["vmAgent"] = {
            "vmAgentVersion": "2.12.0.2",
            "statuses": [
                {
                    "code": "ProvisioningState/succeeded",
                    "level": "Info",
                    "displayStatus": "Ready",
                    "message": "GuestAgent is running and accepting new configurations.",
                    "time": CREATED,
                }
            ],
            "extensionHandlers": [],
        }
    return view

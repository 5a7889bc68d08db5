<#
.SYNOPSIS
    Reports the rgpu test-machine state: devices, driver service, driver store, test signing,
    Driver Verifier.

.DESCRIPTION
    For every device with an rgpu hardware ID: status, Device Manager problem code and the
    NTSTATUS behind it (DEVPKEY_Device_ProblemStatus), driver version and INF. Then the rgpu
    service (Running = the driver is loaded), the rgpu packages in the driver store, whether this
    boot has test signing, and `verifier /querysettings` (plus `verifier /query` while rgpu.sys
    is loaded and verified).

    Expected on a machine without rgpu hardware (root-enumerated ROOT\RGPU only): the device
    started in soft mode (no problem code, Status OK) and the service is Running. A device with
    problem code 10 (CM_PROB_FAILED_START) failed its start: the NTSTATUS column says why. See
    docs/testing-on-windows.md ("The soft rgpu on a test machine").

.EXAMPLE
    .\status.ps1
#>
[CmdletBinding()]
param()

. (Join-Path $PSScriptRoot 'common.ps1')
Assert-Administrator

Write-Step 'Devices'
$devices = @(Get-RgpuDevice)
if ($devices.Count -eq 0) {
    Write-Host "no device with hardware ID $($RgpuHardwareIds -join ' or ')"
}
foreach ($device in $devices) {
    $property = {
        param($Key)
        $p = Get-PnpDeviceProperty -InstanceId $device.InstanceId -KeyName $Key -ErrorAction SilentlyContinue
        if ($p) { $p.Data } else { $null }
    }
    $problemStatus = & $property 'DEVPKEY_Device_ProblemStatus'
    [pscustomobject]@{
        InstanceId    = $device.InstanceId
        Name          = $device.FriendlyName
        Status        = $device.Status
        ProblemCode   = $device.ConfigManagerErrorCode
        # NTSTATUS; -f prints a negative Int32 as its two's complement, e.g. 0xC0000186.
        ProblemStatus = if ($null -ne $problemStatus) { '0x{0:X8}' -f $problemStatus } else { '' }
        DriverVersion = & $property 'DEVPKEY_Device_DriverVersion'
        DriverInf     = & $property 'DEVPKEY_Device_DriverInfPath'
    } | Format-List | Out-String | Write-Host
}

Write-Step "Service $RgpuServiceName"
$service = Get-CimInstance -ClassName Win32_SystemDriver -Filter "Name='$RgpuServiceName'" -ErrorAction SilentlyContinue
if ($service) {
    $service | Select-Object -Property @('Name', 'State', 'StartMode', 'PathName') | Format-List | Out-String | Write-Host
} else {
    Write-Host 'not installed'
}

Write-Step 'Driver store'
$packages = @(Get-RgpuDriverPackage)
Write-Host $(if ($packages.Count) { $packages -join ', ' } else { "no $RgpuInfName" })

Write-Step 'Code integrity'
Write-Host "test signing in this boot: $(Test-TestSigningActive)"
Write-Host "Secure Boot: $(Test-SecureBootOn)"

Write-Step 'Driver Verifier'
Invoke-Native -FilePath 'verifier.exe' -ArgumentList @('/querysettings') | Out-Null
if ($service -and $service.State -eq 'Running' -and ((Get-VerifiedDriver) -contains $RgpuDriverFile)) {
    Invoke-Native -FilePath 'verifier.exe' -ArgumentList @('/query') | Out-Null
}

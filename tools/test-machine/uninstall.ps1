<#
.SYNOPSIS
    Undoes install.ps1: removes the rgpu devices it created, the rgpu driver packages, the Driver
    Verifier settings for rgpu.sys, the trusted test certificate and (if install.ps1 turned it on)
    test signing.

.DESCRIPTION
    Uses %ProgramData%\rgpu-test-machine\state.json (written by install.ps1) to undo only what
    the kit changed:
      - root-enumerated devices with hardware ID ROOT\RGPU: `devgen /remove` for devices devgen
        made, else `pnputil /remove-device` (Windows 10 2004 and later), else `devcon remove`;
      - every rgpu.inf in the driver store: `pnputil /delete-driver oemNN.inf /uninstall /force`;
      - Driver Verifier: `verifier /reset` only when rgpu.sys is the only verified driver;
      - the test certificate(s) it imported, from LocalMachine\Root and \TrustedPublisher;
      - `bcdedit /set testsigning off` only when install.ps1 turned it on.
    Reboot afterwards so that the verifier and boot settings take effect.

.PARAMETER CertificatePath
    Also remove this certificate (for a machine set up by hand, without state.json).

.EXAMPLE
    .\uninstall.ps1
#>
[CmdletBinding()]
param(
    [string]$CertificatePath
)

. (Join-Path $PSScriptRoot 'common.ps1')
Assert-Administrator

$state = $null
if ($null -eq (Read-RgpuState)) {
    Write-Warning "No $RgpuStatePath: removing rgpu devices and packages, leaving test signing alone."
} else {
    $state = Read-RgpuStateComplete
}

Write-Step 'Devices'
$devgen = Find-WdkTool 'devgen.exe'
$devcon = Find-WdkTool 'devcon.exe'
$build = [Environment]::OSVersion.Version.Build
foreach ($device in @(Get-RgpuDevice | Where-Object { $_.InstanceId -like 'ROOT\*' })) {
    $id = $device.InstanceId
    if ($devgen -and $id -like 'ROOT\DEVGEN\*') {
        Invoke-Native -FilePath $devgen -ArgumentList @('/remove', $id) | Out-Null
    } elseif ($build -ge 19041) {
        Invoke-Native -FilePath 'pnputil.exe' -ArgumentList @('/remove-device', $id) -AllowedExitCodes @(0, 3010) | Out-Null
    } elseif ($devcon) {
        Invoke-Native -FilePath $devcon -ArgumentList @('remove', "@$id") -AllowedExitCodes @(0, 1) | Out-Null
    } else {
        Write-Warning "Cannot remove $id here: remove it in Device Manager."
    }
}

Write-Step 'Driver store'
foreach ($oem in @(Get-RgpuDriverPackage)) {
    Invoke-Native -FilePath 'pnputil.exe' -ArgumentList @('/delete-driver', $oem, '/uninstall', '/force') -AllowedExitCodes @(0, 3010) | Out-Null
}

Write-Step 'Driver Verifier'
$verified = @(Get-VerifiedDriver)
if ($verified.Count -eq 1 -and $verified[0] -ieq $RgpuDriverFile) {
    Invoke-Native -FilePath 'verifier.exe' -ArgumentList @('/reset') -AllowedExitCodes @(0, 2) | Out-Null
} elseif ($verified -contains $RgpuDriverFile) {
    Write-Warning "Driver Verifier also verifies $($verified -join ' '): remove rgpu.sys from its list yourself (verifier.exe)."
} else {
    Write-Host 'rgpu.sys is not verified'
}

Write-Step 'Test certificate'
$thumbprints = @()
if ($state) { $thumbprints += @($state.CertificateThumbprints) }
if ($CertificatePath) {
    $thumbprints += (New-Object System.Security.Cryptography.X509Certificates.X509Certificate2($CertificatePath)).Thumbprint
}
foreach ($thumbprint in @($thumbprints | Where-Object { $_ } | Select-Object -Unique)) {
    foreach ($store in 'Root', 'TrustedPublisher') {
        $path = "Cert:\LocalMachine\$store\$thumbprint"
        if (Test-Path $path) {
            Remove-Item -Path $path
            Write-Host "removed $thumbprint from LocalMachine\$store"
        }
    }
}

Write-Step 'Test signing'
if ($state -and $state.TestSigningEnabledByKit) {
    Invoke-Native -FilePath 'bcdedit.exe' -ArgumentList @('/set', 'testsigning', 'off') | Out-Null
} else {
    Write-Host 'left as it was (install.ps1 did not turn it on)'
}

Write-Step 'Crash dump settings'
if ($state -and ($state.PSObject.Properties.Name -contains 'CrashControlBefore')) {
    & (Join-Path $PSScriptRoot 'crashdump.ps1') -Restore
} else {
    Write-Host 'left as they were (crashdump.ps1 -Enable did not change them)'
}

if (Test-Path $RgpuStatePath) { Remove-Item -Path $RgpuStatePath }
Write-Warning 'Reboot to finish (Driver Verifier and boot settings change at boot).'

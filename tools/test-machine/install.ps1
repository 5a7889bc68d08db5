<#
.SYNOPSIS
    Installs the rgpu driver package on a test machine: test signing, test certificate, driver
    store, root-enumerated ROOT\RGPU device, Driver Verifier. Undo with uninstall.ps1.

.DESCRIPTION
    Steps, each skipped when already done:
      1. Test signing. If this boot does not have it, runs `bcdedit /set testsigning on` and stops:
         reboot, then run install.ps1 again. Refuses when Secure Boot is on (Windows then ignores
         test signing; turn Secure Boot off in the firmware or VM settings).
      2. Trusts the package's test certificate (*.cer) in LocalMachine\Root and
         LocalMachine\TrustedPublisher.
      3. Catalog. The cross-flavour package (tools/package/package.sh) has no rgpu.cat; with
         -PfxPath and the WDK's inf2cat.exe and signtool.exe on this machine, makes and signs one.
      4. `pnputil /add-driver rgpu.inf /install`: puts the package in the driver store and
         installs it on any present rgpu device.
      5. Creates the root-enumerated test device ROOT\RGPU unless one exists: with devgen.exe
         (WDK for Windows 11 22H2 and later: `devgen /add /bus ROOT /hardwareid ROOT\RGPU`), else
         with devcon.exe (`devcon install rgpu.inf ROOT\RGPU`). pnputil cannot create a device.
      6. Driver Verifier for rgpu.sys: the /standard rule classes, DDI compliance checking
         included (`verifier /ruleclasses 1 2 4 5 6 8 9 12 18 /driver rgpu.sys`); with
         -LowResources also class 3, randomized low resources simulation. Effective after a
         reboot. Left alone when Verifier already verifies other drivers.
      7. Prints status.ps1's report.
    What it changed is recorded in %ProgramData%\rgpu-test-machine\state.json for uninstall.ps1.

.PARAMETER PackageDir
    The driver package: rgpu.sys, rgpu.inf, a *.cer and (wdk flavour) rgpu.cat. Default: the
    cross flavour's out\package next to this kit.

.PARAMETER CertificatePath
    The test certificate to trust. Default: the only *.cer in PackageDir.

.PARAMETER PfxPath
    The test signing key (out\rgpu-test.pfx from package.sh) used to sign a catalog made here
    when PackageDir has no rgpu.cat.

.PARAMETER PfxPassword
    Password of PfxPath (package.sh uses rgpu-test).

.PARAMETER DeviceTool
    Auto (devgen, else devcon), DevGen or DevCon.

.PARAMETER SkipVerifier
    Do not touch Driver Verifier.

.PARAMETER LowResources
    Also enable randomized low resources simulation (rule class 3): from 7 minutes after boot,
    about 6 % of rgpu's pool allocations and other resource requests fail. Every failure must
    give a clean NTSTATUS, never a bugcheck; expect rgpu-kmt selftest and DevFund runs to fail
    now and then while it is on (a failed start, a refused allocation).

.EXAMPLE
    .\install.ps1 -PackageDir C:\rgpu\package -PfxPath C:\rgpu\rgpu-test.pfx

.NOTES
    Test machines only: it lowers the machine's code-integrity policy. Not run by the project's
    CI (no Windows there); see docs/testing-on-windows.md.
#>
[CmdletBinding()]
param(
    [string]$PackageDir = (Join-Path $PSScriptRoot '..\..\out\package'),
    [string]$CertificatePath,
    [string]$PfxPath,
    [string]$PfxPassword = 'rgpu-test',
    [ValidateSet('Auto', 'DevGen', 'DevCon')] [string]$DeviceTool = 'Auto',
    [switch]$SkipVerifier,
    [switch]$LowResources
)

. (Join-Path $PSScriptRoot 'common.ps1')
Assert-Administrator

$PackageDir = (Resolve-Path $PackageDir).Path
$inf = Join-Path $PackageDir $RgpuInfName
foreach ($file in $inf, (Join-Path $PackageDir $RgpuDriverFile)) {
    if (-not (Test-Path $file)) { throw "$file not found: is $PackageDir an rgpu package?" }
}
if (-not $CertificatePath) {
    $certs = @(Get-ChildItem -Path $PackageDir -Filter '*.cer')
    if ($certs.Count -ne 1) { throw "Expected one *.cer in $PackageDir, found $($certs.Count); pass -CertificatePath." }
    $CertificatePath = $certs[0].FullName
}

$state = Read-RgpuStateComplete

Write-Step '1. Test signing'
if (Test-TestSigningActive) {
    Write-Host 'This boot has test signing on.'
} else {
    if (Test-SecureBootOn) {
        throw 'Secure Boot is on, so Windows ignores test signing. Turn Secure Boot off (firmware or VM settings), then run again.'
    }
    Invoke-Native -FilePath 'bcdedit.exe' -ArgumentList @('/set', 'testsigning', 'on') | Out-Null
    $state.TestSigningEnabledByKit = $true
    Write-RgpuState $state
    Write-Warning 'Test signing is set for the next boot. Reboot, then run install.ps1 again.'
    return
}

Write-Step '2. Trust the test certificate'
$certificate = New-Object System.Security.Cryptography.X509Certificates.X509Certificate2($CertificatePath)
Write-Host "$($certificate.Subject)  thumbprint $($certificate.Thumbprint)  expires $($certificate.NotAfter)"
foreach ($store in 'Root', 'TrustedPublisher') {
    Import-Certificate -FilePath $CertificatePath -CertStoreLocation "Cert:\LocalMachine\$store" | Out-Null
    Write-Host "imported into LocalMachine\$store"
}
$state.CertificateThumbprints = @(@($state.CertificateThumbprints) + $certificate.Thumbprint | Select-Object -Unique)
Write-RgpuState $state

Write-Step '3. Catalog'
$catalog = Join-Path $PackageDir 'rgpu.cat'
if (Test-Path $catalog) {
    Write-Host "$catalog present"
} else {
    $inf2cat = Find-WdkTool 'inf2cat.exe'
    $signtool = Find-WdkTool 'signtool.exe'
    if (-not ($PfxPath -and $inf2cat -and $signtool)) {
        throw ("$PackageDir has no rgpu.cat, and Windows installs no driver package without a signed catalog. " +
            'Pass -PfxPath out\rgpu-test.pfx on a machine with the WDK (inf2cat.exe, signtool.exe), ' +
            'or make it elsewhere: inf2cat /driver:<package> /os:10_X64, then ' +
            'signtool sign /fd SHA256 /f rgpu-test.pfx /p rgpu-test <package>\rgpu.cat (docs/packaging.md).')
    }
    Invoke-Native -FilePath $inf2cat -ArgumentList @("/driver:$PackageDir", '/os:10_X64', '/uselocaltime') | Out-Null
    Invoke-Native -FilePath $signtool -ArgumentList @('sign', '/fd', 'SHA256', '/f', $PfxPath, '/p', $PfxPassword, $catalog) | Out-Null
}

Write-Step '4. Driver store'
# 259 (ERROR_NO_MORE_ITEMS): added, but no present device matched yet. 3010: reboot needed.
Invoke-Native -FilePath 'pnputil.exe' -ArgumentList @('/add-driver', $inf, '/install') -AllowedExitCodes @(0, 259, 3010) | Out-Null
Write-Host "driver store: $((Get-RgpuDriverPackage) -join ', ')"

Write-Step "5. Root-enumerated device $RgpuRootHardwareId"
$existing = @(Get-RgpuDevice | Where-Object { @($_.HardwareID) -contains $RgpuRootHardwareId })
if ($existing.Count -gt 0) {
    Write-Host "already present: $(($existing | ForEach-Object { $_.InstanceId }) -join ', ')"
} else {
    $devgen = if ($DeviceTool -ne 'DevCon') { Find-WdkTool 'devgen.exe' } else { $null }
    $devcon = if ($DeviceTool -ne 'DevGen') { Find-WdkTool 'devcon.exe' } else { $null }
    if ($devgen) {
        Invoke-Native -FilePath $devgen -ArgumentList @('/add', '/bus', 'ROOT', '/hardwareid', $RgpuRootHardwareId) | Out-Null
    } elseif ($devcon) {
        # devcon exit code 1 = done, reboot required.
        Invoke-Native -FilePath $devcon -ArgumentList @('install', $inf, $RgpuRootHardwareId) -AllowedExitCodes @(0, 1) | Out-Null
    } else {
        throw 'Neither devgen.exe nor devcon.exe found (WDK Tools\<version>\x64); put one on PATH. pnputil cannot create root-enumerated devices.'
    }
    Start-Sleep -Seconds 3
    $created = @(Get-RgpuDevice | Where-Object { @($_.HardwareID) -contains $RgpuRootHardwareId } | ForEach-Object { $_.InstanceId })
    if ($created.Count -eq 0) { throw "No device with hardware ID $RgpuRootHardwareId appeared." }
    $state.CreatedDevices = @(@($state.CreatedDevices) + $created | Select-Object -Unique)
    Write-RgpuState $state
    Write-Host "created: $($created -join ', ')"
}

Write-Step '6. Driver Verifier'
if ($SkipVerifier) {
    Write-Host 'skipped (-SkipVerifier)'
} else {
    $others = @(Get-VerifiedDriver | Where-Object { $_ -ine $RgpuDriverFile })
    if ($others.Count -gt 0) {
        Write-Warning "Driver Verifier already verifies $($others -join ' '); not changing its settings. Add rgpu.sys yourself."
    } else {
        # verifier.exe exits with 2 when the new settings need a reboot.
        $classes = $RgpuVerifierRuleClasses
        if ($LowResources) { $classes = @($classes) + $RgpuVerifierLowResourcesRuleClass }
        $arguments = @('/ruleclasses') + $classes + @('/driver', $RgpuDriverFile)
        Invoke-Native -FilePath 'verifier.exe' -ArgumentList $arguments -AllowedExitCodes @(0, 2) | Out-Null
        $state.VerifierEnabledByKit = $true
        Write-RgpuState $state
        Write-Warning 'Driver Verifier settings take effect after a reboot.'
        if ($LowResources) { Write-Warning 'Low resources simulation starts 7 minutes after boot.' }
    }
}

Write-Step '7. Status'
& (Join-Path $PSScriptRoot 'status.ps1')

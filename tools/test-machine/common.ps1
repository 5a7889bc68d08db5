<#
.SYNOPSIS
    Helpers shared by install.ps1, status.ps1 and uninstall.ps1 (dot-sourced; not a script to run).

.NOTES
    Never run on the machine that wrote it: PowerShell is not available on the project's Linux
    machines (docs/testing-on-windows.md). Read it before you run it.
#>

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$RgpuRootHardwareId = 'ROOT\RGPU'
$RgpuHardwareIds = @($RgpuRootHardwareId, 'PCI\VEN_FFFE&DEV_52A0')
$RgpuDriverFile = 'rgpu.sys'
$RgpuInfName = 'rgpu.inf'
$RgpuServiceName = 'rgpu'
# Rule classes for `verifier /ruleclasses` (Windows 10 and 11; Learn, "Driver Verifier Command
# Syntax" and "Driver Verifier options and rule classes"): the /standard set — 1 special pool,
# 2 force IRQL checking, 4 pool tracking, 5 I/O verification, 6 deadlock detection, 8 DMA
# checking, 9 security checks, 12 miscellaneous checks, 18 DDI compliance checking — the same as
# `verifier /standard` (/flags 0x209BB). install.ps1 -LowResources adds class 3, randomized low
# resources simulation (/flags 0x209BF).
$RgpuVerifierRuleClasses = @('1', '2', '4', '5', '6', '8', '9', '12', '18')
$RgpuVerifierLowResourcesRuleClass = '3'
# The driver description the INF gives the root-enumerated device (inf/rgpu.inx
# rgpu.TestDeviceDesc); rgpu-kmt recognises the soft adapter by it.
$RgpuRootDeviceDescription = 'rgpu render-only GPU (root-enumerated test device)'
$RgpuStateDir = Join-Path $env:ProgramData 'rgpu-test-machine'
$RgpuStatePath = Join-Path $RgpuStateDir 'state.json'
$VerifierRegistryKey = 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager\Memory Management'

function Assert-Administrator {
    $principal = New-Object Security.Principal.WindowsPrincipal([Security.Principal.WindowsIdentity]::GetCurrent())
    if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
        throw 'Run this from an elevated PowerShell (Run as administrator).'
    }
}

function Write-Step([string]$Text) {
    Write-Host ''
    Write-Host "== $Text" -ForegroundColor Cyan
}

# Runs a native program, shows the command and its output, and returns its exit code. Throws
# unless the exit code is one of $AllowedExitCodes.
function Invoke-Native {
    param(
        [Parameter(Mandatory)] [string]$FilePath,
        [string[]]$ArgumentList = @(),
        [int[]]$AllowedExitCodes = @(0)
    )
    Write-Host "> $FilePath $($ArgumentList -join ' ')"
    # Windows PowerShell 5.1 turns native stderr into terminating errors under 'Stop'.
    $previous = $ErrorActionPreference
    $ErrorActionPreference = 'Continue'
    try {
        $output = & $FilePath @ArgumentList 2>&1
        $code = $LASTEXITCODE
    } finally {
        $ErrorActionPreference = $previous
    }
    foreach ($line in $output) { Write-Host "  $line" }
    if ($AllowedExitCodes -notcontains $code) {
        throw "$FilePath exited with code $code"
    }
    return $code
}

# Runs a native program and returns @{ Output = its stdout and stderr lines; ExitCode }, whatever
# the exit code (the caller judges it). Like Invoke-Native, keeps Windows PowerShell 5.1 from
# turning native stderr into terminating errors.
function Invoke-NativeCapture {
    param(
        [Parameter(Mandatory)] [string]$FilePath,
        [string[]]$ArgumentList = @()
    )
    $previous = $ErrorActionPreference
    $ErrorActionPreference = 'Continue'
    try {
        $output = @(& $FilePath @ArgumentList 2>&1 | ForEach-Object { "$_" })
        $code = $LASTEXITCODE
    } finally {
        $ErrorActionPreference = $previous
    }
    return @{ Output = $output; ExitCode = $code }
}

# The kit's state (state.json) with every property the scripts use, added when missing (another
# script may have written the file first).
function Read-RgpuStateComplete {
    $state = Read-RgpuState
    if ($null -eq $state) { $state = [pscustomobject]@{} }
    $defaults = [ordered]@{
        TestSigningEnabledByKit = $false
        CertificateThumbprints  = @()
        CreatedDevices          = @()
        VerifierEnabledByKit    = $false
    }
    foreach ($name in $defaults.Keys) {
        if (-not ($state.PSObject.Properties.Name -contains $name)) {
            $state | Add-Member -NotePropertyName $name -NotePropertyValue $defaults[$name]
        }
    }
    return $state
}

# A WDK tool (devgen.exe, devcon.exe, inf2cat.exe, signtool.exe): from PATH, else from the
# newest x64 folder under the installed WDK's Tools or bin directories. $null if absent.
function Find-WdkTool([string]$Name) {
    $command = Get-Command $Name -ErrorAction SilentlyContinue
    if ($command) { return $command.Source }
    $kits = ${env:ProgramFiles(x86)}
    if (-not $kits) { return $null }
    foreach ($sub in 'Windows Kits\10\Tools', 'Windows Kits\10\bin') {
        $root = Join-Path $kits $sub
        if (-not (Test-Path $root)) { continue }
        $found = Get-ChildItem -Path $root -Filter $Name -Recurse -ErrorAction SilentlyContinue |
            Where-Object { $_.DirectoryName -match '\\x64$' } |
            Sort-Object -Property FullName -Descending |
            Select-Object -First 1
        if ($found) { return $found.FullName }
    }
    return $null
}

# The root-enumerated test device (the soft rgpu): the single present ROOT\RGPU device node.
# Throws when there is none or more than one (then pass -InstanceId to the caller).
function Get-RgpuRootDevice {
    $devices = @(Get-RgpuDevice | Where-Object { $_.Present -and @($_.HardwareID) -contains $RgpuRootHardwareId })
    if ($devices.Count -eq 0) { throw "No present device with hardware ID $RgpuRootHardwareId: run install.ps1 first." }
    if ($devices.Count -gt 1) { throw "More than one $RgpuRootHardwareId device ($(($devices | ForEach-Object { $_.InstanceId }) -join ', ')); pass -InstanceId." }
    return $devices[0]
}

# A tool from PATH, else from a folder under the installed WDK (`Windows Kits\10\<Folder>`):
# te.exe from Testing\Runtimes\TAEF\x64, kd.exe from Debuggers\x64. $null if absent.
function Find-KitTool([string]$Name, [string]$Folder) {
    $command = Get-Command $Name -ErrorAction SilentlyContinue
    if ($command) { return $command.Source }
    $kits = ${env:ProgramFiles(x86)}
    if (-not $kits) { return $null }
    $path = Join-Path $kits "Windows Kits\10\$Folder\$Name"
    if (Test-Path $path) { return $path }
    return $null
}

# Every device node (present or not) that carries one of rgpu's hardware IDs.
function Get-RgpuDevice {
    Get-PnpDevice -ErrorAction SilentlyContinue | Where-Object {
        $ids = @($_.HardwareID)
        @($RgpuHardwareIds | Where-Object { $ids -contains $_ }).Count -gt 0
    }
}

# Published names (oemNN.inf) of every rgpu.inf in the driver store.
function Get-RgpuDriverPackage {
    Get-WindowsDriver -Online |
        Where-Object { $_.OriginalFileName -and (Split-Path -Leaf $_.OriginalFileName) -ieq $RgpuInfName } |
        ForEach-Object { $_.Driver }
}

# Drivers listed for Driver Verifier (the registry value verifier.exe writes; not localized).
function Get-VerifiedDriver {
    $value = Get-ItemProperty -Path $VerifierRegistryKey -Name VerifyDrivers -ErrorAction SilentlyContinue
    if ($null -eq $value) { return @() }
    return @($value.VerifyDrivers -split '\s+' | Where-Object { $_ })
}

# True when the running system was booted with test signing (the boot options of this boot).
function Test-TestSigningActive {
    $options = (Get-ItemProperty -Path 'HKLM:\SYSTEM\CurrentControlSet\Control').SystemStartOptions
    return [bool]($options -match '\bTESTSIGNING\b')
}

function Test-SecureBootOn {
    try { return [bool](Confirm-SecureBootUEFI) } catch { return $false }   # BIOS or no UEFI API
}

function Read-RgpuState {
    if (-not (Test-Path $RgpuStatePath)) { return $null }
    return Get-Content -Raw -Path $RgpuStatePath | ConvertFrom-Json
}

function Write-RgpuState($State) {
    New-Item -ItemType Directory -Force -Path $RgpuStateDir | Out-Null
    $State | ConvertTo-Json | Set-Content -Path $RgpuStatePath -Encoding UTF8
}

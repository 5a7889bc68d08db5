<#
.SYNOPSIS
    Crash dumps on an rgpu test machine: make Windows write a kernel memory dump on a bugcheck
    (-Enable), and print the debugger's analysis of the newest dump (-Analyze).

.DESCRIPTION
    -Enable sets HKLM\SYSTEM\CurrentControlSet\Control\CrashControl (Learn, "Overview of memory
    dump file options"): CrashDumpEnabled = 2 (kernel memory dump: enough for a driver bug, far
    smaller than a complete dump), DumpFile = %SystemRoot%\MEMORY.DMP, Overwrite = 1,
    AutoReboot = 1. The previous values are kept in the kit's state.json; -Restore puts them back.
    A kernel dump needs a page file on the boot volume large enough for kernel memory (the
    system-managed default usually is). Effective for the next bugcheck, no reboot needed.

    -Analyze runs the WDK's kd.exe (Debugging Tools for Windows, Windows Kits\10\Debuggers\x64)
    on the newest of %SystemRoot%\MEMORY.DMP and %SystemRoot%\Minidump\*.dmp (or -DumpPath):
      kd.exe -z <dump> -y "srv*<cache>*https://msdl.microsoft.com/download/symbols;<package>"
             -i <package> -logo <out> -c "!analyze -v; lmvm rgpu; !verifier; q"
    and prints the log. What to look for: the bugcheck code and the stack, e.g. 0xC4
    DRIVER_VERIFIER_DETECTED_VIOLATION (parameter 1 names the rule; 0x62 = pool leaked at
    unload), 0xD1 DRIVER_IRQL_NOT_LESS_OR_EQUAL, 0x116 VIDEO_TDR_FAILURE, 0x10E
    VIDEO_MEMORY_MANAGEMENT_INTERNAL — see docs/testing-on-windows.md. Send the whole log with a
    bug report.

.PARAMETER PackageDir
    The package folder (rgpu.sys and, if present, rgpu.pdb) for the debugger's image and symbol
    path. Default: the cross flavour's out\package.

.EXAMPLE
    .\crashdump.ps1 -Enable

.EXAMPLE
    .\crashdump.ps1 -Analyze

.NOTES
    Not run by the project's CI (no Windows there); see docs/testing-on-windows.md.
#>
[CmdletBinding(DefaultParameterSetName = 'Analyze')]
param(
    [Parameter(ParameterSetName = 'Enable', Mandatory)] [switch]$Enable,
    [Parameter(ParameterSetName = 'Restore', Mandatory)] [switch]$Restore,
    [Parameter(ParameterSetName = 'Analyze')] [switch]$Analyze,
    [Parameter(ParameterSetName = 'Analyze')] [string]$DumpPath,
    [Parameter(ParameterSetName = 'Analyze')] [string]$PackageDir = (Join-Path $PSScriptRoot '..\..\out\package'),
    [Parameter(ParameterSetName = 'Analyze')] [string]$SymbolCache = 'C:\symbols'
)

. (Join-Path $PSScriptRoot 'common.ps1')
Assert-Administrator

$crashControl = 'HKLM:\SYSTEM\CurrentControlSet\Control\CrashControl'
$settings = [ordered]@{
    CrashDumpEnabled = 2
    DumpFile         = '%SystemRoot%\MEMORY.DMP'
    Overwrite        = 1
    AutoReboot       = 1
}

function Read-CrashControl {
    $now = Get-ItemProperty -Path $crashControl
    $values = [ordered]@{}
    foreach ($name in $settings.Keys) {
        $values[$name] = if ($now.PSObject.Properties.Name -contains $name) { $now.$name } else { $null }
    }
    return $values
}

switch ($PSCmdlet.ParameterSetName) {
    'Enable' {
        Write-Step 'Kernel memory dump on bugcheck'
        $state = Read-RgpuStateComplete
        if (-not ($state.PSObject.Properties.Name -contains 'CrashControlBefore')) {
            $state | Add-Member -NotePropertyName CrashControlBefore -NotePropertyValue ([pscustomobject](Read-CrashControl))
            Write-RgpuState $state
        }
        foreach ($name in $settings.Keys) {
            $type = if ($name -eq 'DumpFile') { 'ExpandString' } else { 'DWord' }
            Set-ItemProperty -Path $crashControl -Name $name -Value $settings[$name] -Type $type
        }
        [pscustomobject](Read-CrashControl) | Format-List | Out-String | Write-Host
    }
    'Restore' {
        Write-Step 'Crash dump settings as they were'
        $state = Read-RgpuState
        if ($null -eq $state -or -not ($state.PSObject.Properties.Name -contains 'CrashControlBefore')) {
            Write-Host 'crashdump.ps1 -Enable never changed them'
            return
        }
        foreach ($p in $state.CrashControlBefore.PSObject.Properties) {
            if ($null -eq $p.Value) {
                Remove-ItemProperty -Path $crashControl -Name $p.Name -ErrorAction SilentlyContinue
            } else {
                $type = if ($p.Name -eq 'DumpFile') { 'ExpandString' } else { 'DWord' }
                Set-ItemProperty -Path $crashControl -Name $p.Name -Value $p.Value -Type $type
            }
        }
        $state.PSObject.Properties.Remove('CrashControlBefore')
        Write-RgpuState $state
        [pscustomobject](Read-CrashControl) | Format-List | Out-String | Write-Host
    }
    'Analyze' {
        Write-Step 'Newest crash dump'
        if (-not $DumpPath) {
            $candidates = @()
            $full = Join-Path $env:SystemRoot 'MEMORY.DMP'
            if (Test-Path $full) { $candidates += Get-Item $full }
            $mini = Join-Path $env:SystemRoot 'Minidump'
            if (Test-Path $mini) { $candidates += @(Get-ChildItem -Path $mini -Filter '*.dmp') }
            if ($candidates.Count -eq 0) { throw "No dump in $full or $mini. Was crashdump.ps1 -Enable run before the bugcheck?" }
            $DumpPath = ($candidates | Sort-Object -Property LastWriteTime -Descending | Select-Object -First 1).FullName
        }
        Write-Host "$DumpPath ($((Get-Item $DumpPath).LastWriteTime))"
        $kd = Find-KitTool 'kd.exe' 'Debuggers\x64'
        if (-not $kd) { throw 'kd.exe not found: install the Debugging Tools for Windows (WDK / Windows SDK) or put kd.exe on PATH.' }
        $package = (Resolve-Path $PackageDir).Path
        New-Item -ItemType Directory -Force -Path $SymbolCache | Out-Null
        $log = Join-Path $RgpuStateDir ("analyze-" + (Get-Date -Format 'yyyyMMdd-HHmmss') + '.log')
        New-Item -ItemType Directory -Force -Path $RgpuStateDir | Out-Null
        $symbols = "srv*$SymbolCache*https://msdl.microsoft.com/download/symbols;$package"
        Invoke-Native -FilePath $kd -ArgumentList @('-z', $DumpPath, '-y', $symbols, '-i', $package, '-logo', $log, '-c', '!analyze -v; lmvm rgpu; !verifier; q') | Out-Null
        Write-Host "analysis written to $log"
    }
}

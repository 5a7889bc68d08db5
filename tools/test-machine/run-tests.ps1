<#
.SYNOPSIS
    Runs rgpu's tests on a test machine: `rgpu-kmt selftest` on the soft rgpu, then the WDTF
    Device Fundamentals (DevFund) tests that apply to a display adapter, and writes a summary.

.DESCRIPTION
    Needs what install.ps1 set up (the package installed, the root-enumerated ROOT\RGPU device,
    Driver Verifier on after a reboot) and, for the DevFund suites, the WDK's test runtimes:
    TAEF (te.exe, its Te.Service) and the WDTF runtime MSI (docs/testing-on-windows.md, "WDTF
    Device Fundamentals", for the three install commands).

    Suites (-Suites), in this order:
      Selftest  `rgpu-kmt.exe info`, then `rgpu-kmt.exe selftest` (exit code 0 = PASS).
      PnP       Devfund_PnPDTest.dll: disable/enable, remove/restart, surprise remove/restart,
                cancel remove, stop (rebalance)/restart, stop with a failed restart, DIF remove
                and parent rescan. No reboot.
      Sleep     Devfund_Sleep_PNP_DisableEnable_With_IO_BeforeAndAfter.dll and
                Devfund_Sleep_With_IO_BeforeAndAfter.dll: every sleep state the machine supports
                (S3 / hibernate / modern standby; a VM may offer none — then they are skipped).
      Reboot    Devfund_RebootRestart_With_IO_BeforeAndAfter.dll: reboots the machine; TAEF
                resumes after the reboot through /RebootStateFile and Te.Service, which needs an
                automatic logon to the test account (netplwiz). Run it on its own.
    The default is Selftest and PnP.

    Every test runs as
      te.exe <binary> /name:"*::<method>*" /p:"DQ=DeviceID='<instance ID>'" /p:"TestCycles=<n>"
             [/p:"DoSimpleIO=False"] /RebootStateFile:<out>\<binary>.state.xml
    (Learn: "How to run the DevFund tests via the command line"; the binaries and methods are
    the ones Learn's Device Fundamentals pages list). Output goes to <out>\<suite>-<method>.log;
    TAEF's "Summary: Total=…, Passed=…, Failed=…" line decides the result. After each test the
    device must still be started (no problem code): a test that leaves it failed is a failure
    even if TAEF says otherwise.

    If the machine bugchecks (Driver Verifier turns driver bugs into bugchecks on purpose), the
    run ends there: after the reboot, `crashdump.ps1 -Analyze` prints !analyze -v of the dump.

.PARAMETER PackageDir
    Where rgpu-kmt.exe is (the package folder). Default: the cross flavour's out\package.

.PARAMETER InstanceId
    The device under test. Default: the single present ROOT\RGPU device.

.PARAMETER Suites
    Any of Selftest, PnP, Sleep, Reboot.

.PARAMETER TestCycles
    DevFund TestCycles (default 3).

.PARAMETER WithSimpleIO
    Run WDTF's simple I/O before and after each PnP operation (DoSimpleIO=True). Its display
    plug-in creates D3D devices, which needs a user-mode driver rgpu does not have yet, so the
    default is DoSimpleIO=False.

.PARAMETER OutDir
    Where logs and summary.json go. Default: %ProgramData%\rgpu-test-machine\results\<time>.

.EXAMPLE
    .\run-tests.ps1 -PackageDir C:\rgpu\package

.EXAMPLE
    .\run-tests.ps1 -Suites Sleep -TestCycles 1

.NOTES
    Not run by the project's CI (no Windows there); written against Learn's documentation and
    reviewed, never executed. See docs/testing-on-windows.md for what each result should be.
#>
[CmdletBinding()]
param(
    [string]$PackageDir = (Join-Path $PSScriptRoot '..\..\out\package'),
    [string]$InstanceId,
    [ValidateSet('Selftest', 'PnP', 'Sleep', 'Reboot')] [string[]]$Suites = @('Selftest', 'PnP'),
    [ValidateRange(1, 100)] [int]$TestCycles = 3,
    [switch]$WithSimpleIO,
    [string]$OutDir = (Join-Path $env:ProgramData ("rgpu-test-machine\results\" + (Get-Date -Format 'yyyyMMdd-HHmmss')))
)

. (Join-Path $PSScriptRoot 'common.ps1')
Assert-Administrator

# The DevFund tests that apply to a display adapter (docs/testing-on-windows.md, "Which tests
# apply"): suite, binary, method. PNPTryStopDeviceRequestNewResourcesAndRestartDevice is left
# out: a root-enumerated device has no resources to rebalance.
$DevFundTests = @(
    @{ Suite = 'PnP'; Binary = 'Devfund_PnPDTest.dll'; Method = 'PNPDisableAndEnableDevice' },
    @{ Suite = 'PnP'; Binary = 'Devfund_PnPDTest.dll'; Method = 'PNPRemoveAndRestartDevice' },
    @{ Suite = 'PnP'; Binary = 'Devfund_PnPDTest.dll'; Method = 'PNPSurpriseRemoveAndRestartDevice' },
    @{ Suite = 'PnP'; Binary = 'Devfund_PnPDTest.dll'; Method = 'PNPCancelRemoveDevice' },
    @{ Suite = 'PnP'; Binary = 'Devfund_PnPDTest.dll'; Method = 'PNPTryStopAndRestartDevice' },
    @{ Suite = 'PnP'; Binary = 'Devfund_PnPDTest.dll'; Method = 'PNPTryStopDeviceAndFailRestart' },
    @{ Suite = 'PnP'; Binary = 'Devfund_PnPDTest.dll'; Method = 'PNPDIFRemoveAndRescanParentDevice' },
    @{ Suite = 'Sleep'; Binary = 'Devfund_Sleep_PNP_DisableEnable_With_IO_BeforeAndAfter.dll'; Method = 'Sleep_PNP_DisableEnable_With_IO_Before_And_After' },
    @{ Suite = 'Sleep'; Binary = 'Devfund_Sleep_With_IO_BeforeAndAfter.dll'; Method = 'Sleep_With_Io_Before_And_After' },
    @{ Suite = 'Reboot'; Binary = 'Devfund_RebootRestart_With_IO_BeforeAndAfter.dll'; Method = 'Reboot_Restart_With_IO_Before_And_After' }
)

function Get-DeviceProblem([string]$Id) {
    $d = Get-PnpDevice -InstanceId $Id -ErrorAction SilentlyContinue
    if ($null -eq $d) { return 'device gone' }
    if ($d.ConfigManagerErrorCode -ne 0) { return "problem code $([int]$d.ConfigManagerErrorCode) ($($d.ConfigManagerErrorCode))" }
    return $null
}

# TAEF's last "Summary: Total=N, Passed=N, Failed=N, Blocked=N, Not Run=N, Skipped=N" line.
function Read-TaefSummary([string[]]$Lines) {
    $line = @($Lines | Where-Object { $_ -match 'Summary:\s*Total=' }) | Select-Object -Last 1
    if (-not $line) { return $null }
    $counts = @{}
    foreach ($m in [regex]::Matches($line, '(Total|Passed|Failed|Blocked|Not Run|Skipped)=(\d+)')) {
        $counts[$m.Groups[1].Value] = [int]$m.Groups[2].Value
    }
    return $counts
}

New-Item -ItemType Directory -Force -Path $OutDir | Out-Null
$results = New-Object System.Collections.Generic.List[object]
function Add-Result([string]$Suite, [string]$Test, [string]$Result, [string]$Detail, [string]$Log) {
    $results.Add([pscustomobject]@{ Suite = $Suite; Test = $Test; Result = $Result; Detail = $Detail; Log = $Log })
    $color = 'Red'
    if ($Result -eq 'PASS') { $color = 'Green' } elseif ($Result -eq 'SKIP') { $color = 'Yellow' }
    Write-Host ("{0,-5} {1}: {2}  {3}" -f $Result, $Suite, $Test, $Detail) -ForegroundColor $color
}

Write-Step 'Device under test'
if (-not $InstanceId) { $InstanceId = (Get-RgpuRootDevice).InstanceId }
Write-Host "instance ID: $InstanceId"
$problem = Get-DeviceProblem $InstanceId
if ($problem) {
    throw ("$InstanceId is not started ($problem). A root-enumerated rgpu starts in soft mode; " +
        'see status.ps1 and docs/testing-on-windows.md ("The soft rgpu on a test machine").')
}
Write-Host 'started (no problem code)'

if ($Suites -contains 'Selftest') {
    Write-Step 'rgpu-kmt'
    $kmt = Join-Path (Resolve-Path $PackageDir).Path 'rgpu-kmt.exe'
    if (-not (Test-Path $kmt)) { throw "$kmt not found: is $PackageDir an rgpu package?" }
    foreach ($command in 'info', 'selftest') {
        $log = Join-Path $OutDir "rgpu-kmt-$command.log"
        $run = Invoke-NativeCapture -FilePath $kmt -ArgumentList @($command)
        $output = $run.Output
        $code = $run.ExitCode
        $output | Set-Content -Path $log -Encoding UTF8
        foreach ($line in $output) { Write-Host "  $line" }
        $last = [string](@($output) | Select-Object -Last 1)
        # Exit codes: 0 pass, 1 fail, 2 usage, 3 no rgpu adapter (docs/testing-on-windows.md).
        Add-Result 'Selftest' "rgpu-kmt $command" $(if ($code -eq 0) { 'PASS' } else { 'FAIL' }) "exit code $code; $last" $log
    }
}

$devfund = @($DevFundTests | Where-Object { $Suites -contains $_.Suite })
if ($devfund.Count -gt 0) {
    Write-Step 'WDTF Device Fundamentals'
    $te = Find-KitTool 'te.exe' 'Testing\Runtimes\TAEF\x64'
    $devfundDir = Join-Path ${env:ProgramFiles(x86)} 'Windows Kits\10\Testing\Tests\Additional Tests\x64\DevFund'
    if (-not $te) { throw 'te.exe not found: install the WDK test runtimes (TAEF) and put Testing\Runtimes\TAEF\x64 on PATH.' }
    if (-not (Test-Path $devfundDir)) { throw "$devfundDir not found: the WDK's DevFund tests are not installed." }
    $service = Get-Service -Name 'Te.Service' -ErrorAction SilentlyContinue
    if (-not $service -or $service.Status -ne 'Running') {
        throw 'Te.Service is not running: wex.services.exe /install:te.service, then sc start te.service (docs/testing-on-windows.md).'
    }
    Write-Host "te.exe: $te"
    foreach ($t in $devfund) {
        $binary = Join-Path $devfundDir $t.Binary
        $log = Join-Path $OutDir "$($t.Suite)-$($t.Method).log"
        if (-not (Test-Path $binary)) {
            Add-Result $t.Suite $t.Method 'SKIP' "$($t.Binary) not in $devfundDir" ''
            continue
        }
        $arguments = @(
            $binary,
            "/name:*::$($t.Method)*",
            "/p:DQ=DeviceID='$InstanceId'",
            "/p:TestCycles=$TestCycles",
            "/RebootStateFile:$(Join-Path $OutDir ($t.Binary + '.state.xml'))"
        )
        if ($t.Suite -eq 'PnP') { $arguments += "/p:DoSimpleIO=$(if ($WithSimpleIO) { 'True' } else { 'False' })" }
        Write-Host "> te.exe $($arguments -join ' ')"
        Push-Location $devfundDir
        try {
            $run = Invoke-NativeCapture -FilePath $te -ArgumentList $arguments
            $output = $run.Output
            $code = $run.ExitCode
        } finally {
            Pop-Location
        }
        $output | Set-Content -Path $log -Encoding UTF8
        $summary = Read-TaefSummary $output
        $after = Get-DeviceProblem $InstanceId
        if ($after) {
            Add-Result $t.Suite $t.Method 'FAIL' "device left $after (te.exe exit code $code)" $log
        } elseif ($null -eq $summary) {
            Add-Result $t.Suite $t.Method 'FAIL' "no TAEF summary line (te.exe exit code $code)" $log
        } elseif ($summary['Total'] -eq 0) {
            Add-Result $t.Suite $t.Method 'FAIL' 'TAEF selected no test: check the method name' $log
        } elseif ($summary['Failed'] -gt 0 -or $summary['Blocked'] -gt 0) {
            Add-Result $t.Suite $t.Method 'FAIL' "Failed=$($summary['Failed']) Blocked=$($summary['Blocked']) of $($summary['Total'])" $log
        } elseif ($summary['Passed'] -eq 0) {
            Add-Result $t.Suite $t.Method 'SKIP' "Skipped=$($summary['Skipped']) Not Run=$($summary['Not Run']) of $($summary['Total'])" $log
        } else {
            Add-Result $t.Suite $t.Method 'PASS' "Passed=$($summary['Passed']) of $($summary['Total'])" $log
        }
    }
}

Write-Step 'Summary'
$results | ConvertTo-Json | Set-Content -Path (Join-Path $OutDir 'summary.json') -Encoding UTF8
$results | Format-Table -AutoSize -Property @('Result', 'Suite', 'Test', 'Detail') | Out-String | Write-Host
Write-Host "logs: $OutDir"
$failed = @($results | Where-Object { $_.Result -eq 'FAIL' }).Count
if ($failed -gt 0) {
    Write-Warning "$failed test(s) failed. With Driver Verifier on, also check for a bugcheck: .\crashdump.ps1 -Analyze"
    exit 1
}
exit 0

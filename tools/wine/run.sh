#!/usr/bin/env bash
# Wine test tooling: run the real out/rgpu.sys under Wine 8.0's NT kernel with the fake Dxgkrnl
# port (tools/wine-dxgkrnl), and check every step the port reports.
#
#   tools/wine/run.sh                    scenario "default" (must PASS)
#   tools/wine/run.sh --scenario NAME    one scenario (see below); exit 0 = it passed
#   tools/wine/run.sh --self-test        default must PASS, and each fault scenario must be
#                                        reported as a FAILED run (proves the runner catches it)
#   options: --no-build (use the existing out/rgpu.sys and out/wine/dxgkrnl.sys), --keep (keep
#            the prefix and logs in $WINE_RUN_DIR or a mktemp dir)
#   env:     RGPU_SYS=path  test this rgpu image instead of out/rgpu.sys (implies no rgpu build)
#            WINE_HARNESS_SHIM_STALL=1  add the KeStallExecutionProcessor shim to every scenario
#                                       (diagnostic; CI must not set it)
#
# Scenarios (registry values under the DXGKrnl service key, read by the fake port):
#   default           the port accepts rgpu's newest interface; the step table decides.
#   refuse-all        HarnessMaxInterface=0: DxgkInitialize refuses every version -> rgpu's
#                     DriverEntry fails -> the run must FAIL.
#   old-port          HarnessMaxInterface=WDDM 2.0: an older Dxgkrnl that rejects every version
#                     rgpu offers (2.4..3.1) -> the run must FAIL.
#   old-start-iface   HarnessStartInterface=WDDM 2.0: StartDevice gets a DXGKRNL_INTERFACE
#                     older than rgpu's minimum and must be refused (PASS when it is).
#   all-live          HarnessRequireAllLive=1: the fully tightened step table (FAILs until
#                     rgpu implements every step).
#   negotiate-2.6     HarnessMaxInterface=WDDM 2.6: rgpu must walk down to 2.6 (PASS).
#   soft              HarnessSoft=1: a root-enumerated adapter (PDO enumerator ROOT, empty
#                     resource list), so rgpu starts in soft mode; its engine thread must answer
#                     fence-only requests through SynchronizeExecution -> NotifyInterrupt -> DPC,
#                     and run a paging buffer the port's mini VidMm built in the aperture (FILL +
#                     TRANSFER), read back by the CPU: the run prints `soft rgpu: N bytes
#                     verified` and PASSes only with N > 0.
#   soft-fault        soft + HarnessSoftFault=1: the port leaves the allocation unmapped, the
#                     engine page-faults, 0 bytes are verified -> the run must FAIL.
#   shim-stall        default + HarnessShimStall=1: shims Wine's unimplemented
#                     hal.dll!KeStallExecutionProcessor (diagnostic only; never in CI).
#
# Installs wine64 from Debian when missing (needs root, as CI has). Every wine command runs
# under `timeout`. Measured recipe and pitfalls: ../shared/reference/wine.md; docs/wine.md.
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
build=1 keep=0 mode=one scenario=default
while (($#)); do
    case "$1" in
        --scenario) scenario="$2"; shift 2 ;;
        --self-test) mode=self; shift ;;
        --no-build) build=0; shift ;;
        --keep) keep=1; shift ;;
        *) echo "usage: $0 [--scenario NAME | --self-test] [--no-build] [--keep]" >&2; exit 2 ;;
    esac
done
t0=$(date +%s.%N)
elapsed() { printf '%.1f' "$(echo "$(date +%s.%N) - $1" | bc)"; }

# --- wine ------------------------------------------------------------------------------------
if ! command -v wine >/dev/null || ! command -v wineserver >/dev/null; then
    echo "wine-run: installing wine64 (Debian 12: wine 8.0)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    timeout 600 apt-get install -y -qq wine64 >/dev/null
fi
command -v bc >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; apt-get install -y -qq bc >/dev/null; }
echo "wine-run: $(wine --version 2>/dev/null)"

# --- drivers ---------------------------------------------------------------------------------
rgpu_sys="${RGPU_SYS:-$repo/out/rgpu.sys}"
if ((build)); then
    [[ -n "${RGPU_SYS:-}" ]] || "$repo/tools/cross/build.sh" >/dev/null
    "$repo/tools/wine/build.sh" >/dev/null
fi
for f in "$rgpu_sys" "$repo/out/wine/dxgkrnl.sys"; do
    [[ -f "$f" ]] || { echo "wine-run: $f missing (run without --no-build)" >&2; exit 1; }
done

# --- prefix ----------------------------------------------------------------------------------
work="${WINE_RUN_DIR:-$(mktemp -d /tmp/rgpu-wine.XXXXXX)}"
mkdir -p "$work"
export WINEPREFIX="$work/prefix" WINEARCH=win64 WINEDLLOVERRIDES="mscoree,mshtml="
cleanup() {
    WINEDEBUG=-all timeout 20 wineserver -k >/dev/null 2>&1 || true
    ((keep)) || rm -rf "$work"
}
trap cleanup EXIT
t=$(date +%s.%N)
rm -rf "$WINEPREFIX"
WINEDEBUG=-all timeout 180 wine wineboot -i >"$work/wineboot.log" 2>&1 \
    || { echo "wine-run: wineboot failed"; tail -20 "$work/wineboot.log"; exit 1; }
WINEDEBUG=-all timeout 30 wineserver -k >/dev/null 2>&1 || true
WINEDEBUG=-all timeout 30 wineserver -w || true
drivers="$WINEPREFIX/drive_c/windows/system32/drivers"
cp "$rgpu_sys" "$drivers/rgpu.sys"
cp "$repo/out/wine/dxgkrnl.sys" "$drivers/dxgkrnl.sys"
echo "wine-run: fresh prefix in $(elapsed "$t")s"

# Registry for one scenario: both services, no Group (rgpu's displib loads DXGKrnl into its own
# winedevice process with ZwLoadDriver, as on Windows), harness values set or deleted.
write_registry() {
    local max="-" start="-" live="-" shim="-" soft="-" fault="-"
    case "$1" in
        default) ;;
        refuse-all) max="dword:00000000" ;;
        old-port) max="dword:00005023" ;;
        old-start-iface) start="dword:00005023" ;;
        all-live) live="dword:00000001" ;;
        negotiate-2.6) max="dword:0000b004" ;;
        shim-stall) shim="dword:00000001" ;;
        soft) soft="dword:00000001" ;;
        soft-fault) soft="dword:00000001" fault="dword:00000001" ;;
        *) echo "wine-run: unknown scenario $1" >&2; return 2 ;;
    esac
    [[ "${WINE_HARNESS_SHIM_STALL:-0}" == 1 ]] && shim="dword:00000001"
    cat >"$work/services.reg" <<EOF
REGEDIT4

[HKEY_LOCAL_MACHINE\\System\\CurrentControlSet\\Services\\rgpu]
"Type"=dword:00000001
"Start"=dword:00000003
"ErrorControl"=dword:00000001
"ImagePath"="\\\\SystemRoot\\\\System32\\\\drivers\\\\rgpu.sys"

[HKEY_LOCAL_MACHINE\\System\\CurrentControlSet\\Services\\DXGKrnl]
"Type"=dword:00000001
"Start"=dword:00000003
"ErrorControl"=dword:00000001
"ImagePath"="\\\\SystemRoot\\\\System32\\\\drivers\\\\dxgkrnl.sys"
"HarnessMaxInterface"=$max
"HarnessStartInterface"=$start
"HarnessRequireAllLive"=$live
"HarnessShimStall"=$shim
"HarnessSoft"=$soft
"HarnessSoftFault"=$fault
EOF
    # services.exe caches the service database: write while no wineserver runs (wine.md).
    WINEDEBUG=-all timeout 30 wineserver -k >/dev/null 2>&1 || true
    WINEDEBUG=-all timeout 30 wineserver -w || true
    WINEDEBUG=-all timeout 60 wine regedit /S "$work/services.reg"
    WINEDEBUG=-all timeout 30 wineserver -w || true
}

# Lines every complete run must report (one STEP line at least per DDI stage).
required_steps=(DriverEntry DxgkInitialize AddDevice StartDevice QueryAdapterInfo
                BuildPagingBuffer StopDevice RemoveDevice Unload)
# ... and what the soft scenario must report on top.
soft_steps=(SoftEngine/Start SoftEngine/Preempt#1 SoftEngine/Preempt#2 SoftPaging/Caps
            SoftPaging/CreateProcess SoftPaging/Memory SoftPaging/MapAperture
            SoftPaging/PageTables SoftPaging/BuildPagingBuffer SoftPaging/Complete
            SoftPaging/ReadBack SoftPaging/Teardown)

# Runs one scenario; prints its step table; returns 0 when the run PASSED.
run_scenario() {
    local name="$1" log="$work/$1.log" t rc_start rc_stop verdict problems=()
    t=$(date +%s.%N)
    write_registry "$name" || return 2
    : >"$log"
    # DbgPrint reaches stderr as `warn:debugstr:...` lines; winedevice inherits these fds.
    export WINEDEBUG="-all,+debugstr,err+module,err+ntoskrnl,err+seh"
    set +e
    timeout 60 wine net start rgpu >>"$log" 2>&1; rc_start=$?
    # The port's adapter thread runs after rgpu's DriverEntry returned; wait for its end.
    for _ in $(seq 1 100); do
        grep -q "STEP RemoveDevice" "$log" && break
        grep -qE "Unhandled (page fault|exception)|unimplemented function" "$log" && break
        grep -q "STEP DxgkInitialize" "$log" || { ((rc_start != 0)) && break; }
        sleep 0.1
    done
    timeout 60 wine net stop rgpu >>"$log" 2>&1; rc_stop=$?
    WINEDEBUG=-all timeout 30 wineserver -k >/dev/null 2>&1
    WINEDEBUG=-all timeout 30 wineserver -w
    set -e
    export WINEDEBUG=-all

    echo "--- scenario $name ($(elapsed "$t")s; net start rc=$rc_start, net stop rc=$rc_stop)"
    grep -oE "(wine-dxgkrnl|rgpu): .*" "$log" | sed 's/^/    /' || true

    ((rc_start == 0)) || problems+=("net start rgpu failed (rc=$rc_start): rgpu's DriverEntry did not succeed")
    ((rc_stop == 0)) || problems+=("net stop rgpu failed (rc=$rc_stop)")
    local required=("${required_steps[@]}")
    [[ $name == soft* ]] && required+=("${soft_steps[@]}")
    for s in "${required[@]}"; do
        grep -qE "wine-dxgkrnl: STEP $s[ /]" "$log" || problems+=("missing STEP $s line")
    done
    if grep -qE "wine-dxgkrnl: STEP .* FAIL" "$log"; then problems+=("a step FAILED"); fi
    if grep -qE "Unhandled (page fault|exception)|unimplemented function|__wine_stub|KeBugCheck|Service request timeout|wine: .*crash" "$log"; then
        problems+=("crash or unimplemented Wine export (see log lines above / $log)")
        grep -E "Unhandled|unimplemented|__wine_stub|KeBugCheck|timeout|crash" "$log" | head -5 | sed 's/^/    ! /'
    fi
    if [[ $name == soft* ]]; then
        local line bytes
        line=$(grep -oE "wine-dxgkrnl: soft rgpu: .*" "$log" | tail -1 | sed 's/^wine-dxgkrnl: //')
        bytes=$(sed -nE 's/^soft rgpu: ([0-9]+) bytes verified.*/\1/p' <<<"$line")
        if [[ -z $line ]]; then
            problems+=("no 'soft rgpu:' line")
        elif [[ -z $bytes || $bytes == 0 ]]; then
            problems+=("soft rgpu verified 0 bytes")
        fi
        [[ $name == soft ]] && soft_line=$line
    fi
    verdict=$(grep -oE "wine-dxgkrnl: VERDICT [A-Z]+" "$log" | awk '{print $3}' | tail -1)
    [[ "$verdict" == PASS ]] || problems+=("no VERDICT PASS (got '${verdict:-none}')")
    if ((${#problems[@]})); then
        printf '    => FAILED: %s\n' "${problems[@]}"
        return 1
    fi
    echo "    => PASSED ($(grep -oE "VERDICT PASS.*" "$log"))"
    return 0
}

status=0 soft_line=
if [[ $mode == one ]]; then
    run_scenario "$scenario" || status=1
else
    # scenario:expected-result
    for pair in default:pass soft:pass negotiate-2.6:pass old-start-iface:pass refuse-all:fail old-port:fail soft-fault:fail; do
        name=${pair%%:*} want=${pair##*:}
        if run_scenario "$name"; then got=pass; else got=fail; fi
        if [[ $got == "$want" ]]; then
            echo "    self-test: $name -> run $got, as expected"
        else
            echo "    self-test: $name -> run $got, expected $want"
            status=1
        fi
    done
fi
# The soft scenario's summary, unindented, for CI (.ci/run checks it).
[[ -n $soft_line ]] && echo "$soft_line"
((keep)) && echo "wine-run: logs and prefix kept in $work"
echo "wine-run: $([[ $status == 0 ]] && echo OK || echo FAILED) in $(elapsed "$t0")s"
exit $status

#!/usr/bin/env python3
"""Compares the wdk image's imports and exports with the cross image's (tools/wdk-check/run.sh).

usage: compare.py <pe-check output, cross> <pe-check output, wdk> <cross .sys> <wdk .sys>

Imports come from pe-check's "INFO imports <dll> (<n>): a, b" lines, exports from `objdump -p`.
Every difference must be one of DOCUMENTED (docs/packaging.md, "wdk flavour"); anything else
fails with exit status 1.
"""
import re
import subprocess
import sys

# (category, side that has the import, names, why). All from ntoskrnl.exe.
DOCUMENTED = [
    ("logging", "cross", {"DbgPrintEx"},
     "cross: dxgk::debug (DbgPrintEx, video component)"),
    ("logging", "wdk", {"DbgPrint"}, "wdk: wdk::println! (DbgPrint)"),
    ("allocator", "wdk", {"ExAllocatePool2", "ExFreePool"},
     "wdk-alloc; only once rgpu uses `alloc` (src/seam.rs)"),
    ("mem routines", "wdk", {"memcpy", "memmove", "memset", "memcmp"},
     "wdk: from ntoskrnl.lib, as the prebuilt core of the MSVC targets expects; "
     "cross: compiler-builtins-mem"),
    ("displib stub (Linux check only)", "cross",
     {"ZwLoadDriver", "IoGetDeviceObjectPointer", "IoBuildDeviceIoControlRequest",
      "IofCallDriver", "ObfDereferenceObject", "KeInitializeEvent", "KeWaitForSingleObject"},
     "cross: dxgk_sys::displib's handshake; wdk: the WDK's displib.lib, stubbed here"),
]
# wdk-sys defines these `#[no_mangle]` items, which a cdylib exports.
WDK_SYS_EXPORTS = {"_fltused", "__CxxFrameHandler3", "__CxxFrameHandler4", "__GSHandlerCheck_EH4"}

IMPORTS_RE = re.compile(r"^INFO imports (\S+) \(\d+\): (.*)$", re.M)


def imports(pe_check_output):
    result = set()
    for dll, names in IMPORTS_RE.findall(open(pe_check_output).read()):
        result.update((dll.lower(), n.strip()) for n in names.split(",") if n.strip())
    return result


def exports(image):
    text = subprocess.run(["objdump", "-p", image], check=True, capture_output=True,
                          text=True).stdout
    table = text.split("[Ordinal/Name Pointer] Table", 1)
    if len(table) < 2:
        return set()
    names = set()
    for line in table[1].splitlines()[1:]:
        m = re.match(r"^\s*\[\s*\d+\]\s+(\S+)\s*$", line)
        if not m:
            break
        names.add(m.group(1))
    return names


def main():
    cross_pe, wdk_pe, cross_img, wdk_img = sys.argv[1:5]
    cross, wdk = imports(cross_pe), imports(wdk_pe)
    if not cross or not wdk:
        sys.exit("compare: no import lines in the pe-check output")
    ok = True
    label = lambda dll, name: name if dll == "ntoskrnl.exe" else f"{dll}!{name}"
    print(f"imports:   {len(cross & wdk)} in both images: "
          + ", ".join(label(d, n) for d, n in sorted(cross & wdk, key=lambda i: i[1])))
    for cat, side, names, reason in DOCUMENTED:
        only = (cross - wdk) if side == "cross" else (wdk - cross)
        hits = sorted(n for d, n in only if d == "ntoskrnl.exe" and n in names)
        if hits:
            print(f"           {cat}: only {side}: {', '.join(hits)}  ({reason})")
    documented = {(side, name) for _, side, names, _ in DOCUMENTED for name in names}
    for side, only in (("cross", cross - wdk), ("wdk", wdk - cross)):
        for dll, name in sorted(only):
            if dll != "ntoskrnl.exe" or (side, name) not in documented:
                print(f"           UNDOCUMENTED: only {side}: {label(dll, name)}")
                ok = False
    cross_exp, wdk_exp = exports(cross_img), exports(wdk_img)
    print(f"exports:   both: {', '.join(sorted(cross_exp & wdk_exp)) or '-'}")
    for side, only, allowed in (("cross", cross_exp - wdk_exp, set()),
                                ("wdk", wdk_exp - cross_exp, WDK_SYS_EXPORTS)):
        if only & allowed:
            print(f"           only {side}: {', '.join(sorted(only & allowed))}"
                  "  (wdk-sys's #[no_mangle] items)")
        if only - allowed:
            print(f"           UNDOCUMENTED: only {side}: {', '.join(sorted(only - allowed))}")
            ok = False
    print(f"compare:   {'PASS' if ok else 'FAIL'}: imports and exports differ "
          f"{'only where documented' if ok else 'where nothing documents it'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Scratch WDK content root for tools/wdk-check/run.sh (never written into WDK_ROOT or the repo).

  wdk_kit.py include <WDK_ROOT> <version> <kit>
      <kit>/Include/<version>/{km,shared,um}: a tree of symlinks to WDK_ROOT's headers, plus a
      symlink for every `#include` whose spelling differs from the file name only in case (the
      headers are written for a case-insensitive file system: "DriverSpecs.h" is driverspecs.h).

  wdk_kit.py libs <kit> <version> <wdk-sys OUT_DIR> <lld-link> <clang>
      <kit>/Lib/<version>/km/x64: stand-ins for the WDK libraries wdk-build links (WDM), which are
      not among the headers: import libraries ntoskrnl.lib and hal.lib naming every function the
      wdk-sys bindings declare (hal.lib: those the headers declare NTHALAPI), empty
      BufferOverflowFastFailK.lib and wmilib.lib, and displib.lib with a DxgkInitialize that
      returns STATUS_NOT_SUPPORTED. They let the image link; its imports are then what the
      driver really calls, except what the real displib.lib would add (docs/packaging.md).

  wdk_kit.py common-types <dxgk-sys src> <wdk-sys OUT_DIR>
      Prints "<name> layout" or "<name> opaque", one per line, for every type name that both
      dxgk-sys and wdk-sys define; "opaque": dxgk-sys declares it zero-sized (`_private:
      [u8; 0]`), to be used only behind pointers.
"""
import os
import pathlib
import re
import subprocess
import sys

INCLUDE_RE = re.compile(rb'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.M)
# dxgk-sys and bindgen output alike: `pub struct X`, `pub union X`, `pub type X =`.
TYPE_RE = re.compile(r"^\s*pub (?:struct|union|type|enum) ([A-Za-z_][A-Za-z0-9_]*)\b", re.M)
OPAQUE_RE = re.compile(r"^pub struct ([A-Za-z_][A-Za-z0-9_]*) \{\s*_private: \[u8; 0\],?\s*\}", re.M)
FN_RE = re.compile(r"^\s*pub fn ([A-Za-z_][A-Za-z0-9_]*)\s*\(", re.M)
# The last identifier before the first "(" after NTHALAPI: the declared function's name.
# Preprocessor lines are blanked first: wdm.h has "NTHALAPI\n#endif\nLARGE_INTEGER\nKeQuery...(".
NTHALAPI_RE = re.compile(r"\bNTHALAPI\b[^;(#]*?\b([A-Za-z_]\w*)\s*\(")
PREPROCESSOR_RE = re.compile(r"^\s*#.*$", re.M)
# Called by code LLVM emits; ntoskrnl.lib exports them and the prebuilt `core` of the MSVC targets
# expects them from there (no compiler-builtins "mem" feature, unlike the cross flavour).
MEM_ROUTINES = ["memcpy", "memmove", "memset", "memcmp"]


def include(wdk_root, version, kit):
    src = pathlib.Path(wdk_root, "Include", version).resolve()
    dst = pathlib.Path(kit, "Include", version)
    dirs = [d for d in ("km", "shared", "um") if (src / d).is_dir()]
    if "km" not in dirs or "shared" not in dirs:
        sys.exit(f"wdk_kit: {src} needs km/ and shared/ (found {dirs})")
    files = {}  # relative path -> absolute target
    for d in dirs:
        for root, _, names in os.walk(src / d):
            for name in names:
                path = pathlib.Path(root, name)
                files[path.relative_to(src).as_posix()] = path
    for rel, target in files.items():
        link = dst / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(target)
    # wdk-build's include path for WDM: km/crt, km, shared (in that order).
    search = ["km/crt", "km", "shared"]
    lower = {}
    for rel in files:
        lower.setdefault(rel.lower(), rel)
    made = 0
    for rel, target in files.items():
        here = pathlib.PurePosixPath(rel).parent.as_posix()
        for m in INCLUDE_RE.finditer(target.read_bytes()):
            name = m.group(1).decode(errors="replace").replace("\\", "/")
            bases = [here] + search
            if any(f"{b}/{name}" in files for b in bases):
                continue
            for b in bases:
                real = lower.get(f"{b}/{name}".lower())
                if real:
                    link = dst / b / name
                    if not link.exists() and not link.is_symlink():
                        link.parent.mkdir(parents=True, exist_ok=True)
                        link.symlink_to(files[real])
                        made += 1
                    break
    print(f"wdk_kit: {len(files)} headers from {src}, {made} case-variant links")


def bindings_text(out_dir):
    return "\n".join(p.read_text() for p in sorted(pathlib.Path(out_dir).glob("*.rs")))


def libs(kit, version, out_dir, lld_link, clang):
    lib = pathlib.Path(kit, "Lib", version, "km", "x64")
    lib.mkdir(parents=True, exist_ok=True)
    functions = sorted(set(FN_RE.findall(bindings_text(out_dir))))
    if not functions:
        sys.exit(f"wdk_kit: no functions in the wdk-sys bindings in {out_dir}")
    hal_names = set()
    inc = pathlib.Path(kit, "Include", version)
    for header in inc.rglob("*.h"):
        text = PREPROCESSOR_RE.sub("", header.read_text(errors="replace"))
        hal_names.update(NTHALAPI_RE.findall(text))
    hal = [f for f in functions if f in hal_names]
    nt = sorted((set(functions) - set(hal)) | set(MEM_ROUTINES))
    for dll, names, out in (("ntoskrnl.exe", nt, "ntoskrnl"), ("hal.dll", hal, "hal")):
        deffile = lib / f"{out}.def"
        deffile.write_text(f"LIBRARY {dll}\nEXPORTS\n" + "".join(f"  {n}\n" for n in names))
        subprocess.run([lld_link, "/lib", f"/def:{deffile}", "/machine:x64",
                        f"/out:{lib / (out + '.lib')}"], check=True)
    for empty in ("BufferOverflowFastFailK", "wmilib"):
        subprocess.run([lld_link, "/lib", "/llvmlibempty", f"/out:{lib / (empty + '.lib')}"],
                       check=True)
    stub = lib / "displib.c"
    stub.write_text(
        "/* Stand-in for the WDK's displib.lib (tools/wdk-check): STATUS_NOT_SUPPORTED. */\n"
        "long __stdcall DxgkInitialize(void *driver, void *registry, void *data)\n"
        "{ (void)driver; (void)registry; (void)data; return (long)0xC00000BBL; }\n")
    obj = lib / "displib.obj"
    subprocess.run([clang, "--target=x86_64-pc-windows-msvc", "-O2", "-c", str(stub),
                    "-o", str(obj)], check=True)
    subprocess.run([lld_link, "/lib", f"/out:{lib / 'displib.lib'}", str(obj)], check=True)
    print(f"wdk_kit: stub libraries in {lib}: ntoskrnl.lib ({len(nt)} names), "
          f"hal.lib ({len(hal)}), displib.lib, BufferOverflowFastFailK.lib, wmilib.lib")


def common_types(dxgk_src, out_dir):
    ours, opaque = set(), set()
    for path in pathlib.Path(dxgk_src).rglob("*.rs"):
        text = path.read_text()
        ours.update(TYPE_RE.findall(text))
        opaque.update(OPAQUE_RE.findall(text))
    theirs = set(TYPE_RE.findall(bindings_text(out_dir)))
    for name in sorted(ours & theirs):
        print(name, "opaque" if name in opaque else "layout")


if __name__ == "__main__":
    commands = {"include": (include, 3), "libs": (libs, 5), "common-types": (common_types, 2)}
    if len(sys.argv) < 2 or sys.argv[1] not in commands \
            or len(sys.argv) - 2 != commands[sys.argv[1]][1]:
        sys.exit(__doc__)
    fn, _ = commands[sys.argv[1]]
    fn(*sys.argv[2:])

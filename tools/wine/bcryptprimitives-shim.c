/* Test-only stand-in for bcryptprimitives.dll under Wine 8.0 (Debian 12), which has no such
 * DLL. Rust's std for Windows imports ProcessPrng from it (HashMap keys), so without it the
 * loader refuses rgpu-kmt.exe before main. Windows 10 and later ship the real DLL; this shim
 * is only ever placed next to the exe inside a throw-away Wine run directory
 * (tools/cross/build-kmt.sh --wine), never in out/ or the package. */
#include <windows.h>
#include <ntsecapi.h>

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len) {
        ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!RtlGenRandom(data, n))
            return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}

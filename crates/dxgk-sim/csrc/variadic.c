/* Variadic ntoskrnl exports for dxgk-sim. Rust cannot define C-variadic functions on stable,
 * so these format with the host's vsnprintf and hand the text to Rust through a hook that
 * dxgk-sim installs at run time (a pointer, so this object has no link-time dependency on
 * Rust symbols). Only the portable printf subset is meaningful: Windows-only conversions
 * (%wZ, %ws) are not translated. Drivers written against dxgk-sys format in Rust and pass
 * "%s". */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

typedef void (*dxgk_sim_print_hook_t)(unsigned int component, unsigned int level,
                                      const char *text, size_t len);

static dxgk_sim_print_hook_t print_hook;

void dxgk_sim_set_print_hook(dxgk_sim_print_hook_t hook) { print_hook = hook; }

unsigned int DbgPrintEx(unsigned int component, unsigned int level, const char *format, ...) {
    char buf[1024];
    va_list ap;
    int n;
    va_start(ap, format);
    n = vsnprintf(buf, sizeof buf, format, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof buf)
        n = (int)(sizeof buf - 1);
    if (print_hook)
        print_hook(component, level, buf, (size_t)n);
    return 0;
}

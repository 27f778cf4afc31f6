/* Cache problems are reported once per process and kind: a failing disk or a corrupt environment
 * would otherwise print a line for every block read. */
#include <stdarg.h>
#include <string.h>

#include "cache_internal.h"

static atomic_bool logged[MM_CACHE_LOG_KINDS];

void mm_cache_log_once(mm_cache_log_kind kind, const char *fmt, ...)
{
    if (atomic_exchange(&logged[kind], true))
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    mm_log_warn("%s (further cache messages of this kind are not shown)", line);
}

const char *mm_cache_strerror(int rc)
{
    if (rc == MM_CACHE_BADFORMAT)
        return "not a mergemount cache of this format";
    /* mdb_strerror covers both LMDB's codes and errno values. */
    return mdb_strerror(rc);
}

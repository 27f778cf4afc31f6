#define FUSE_USE_VERSION 35

#include "fs/fuselog.h"

#include <fuse_log.h>

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/util.h"

/* The line being assembled by this thread: libfuse's longest lines (an option list, a -d trace of a
 * request) fit; a longer one is cut, never split. */
static _Thread_local char t_line[2048];
static _Thread_local size_t t_len;

static mm_log_level level_of(enum fuse_log_level level)
{
    if (level <= FUSE_LOG_ERR)
        return MM_LOG_ERROR;
    if (level == FUSE_LOG_WARNING)
        return MM_LOG_WARN;
    /* libfuse sends debug lines (-d traces) only when asked for them, so mm_log_at shows them whatever
     * mm_log_verbose says. */
    return level == FUSE_LOG_DEBUG ? MM_LOG_DEBUG : MM_LOG_INFO;
}

static void from_libfuse(enum fuse_log_level level, const char *fmt, va_list ap)
{
    if (t_len < sizeof t_line - 1) {
        int n = vsnprintf(t_line + t_len, sizeof t_line - t_len, fmt, ap);
        if (n > 0)
            t_len = t_len + (size_t)n < sizeof t_line - 1 ? t_len + (size_t)n : sizeof t_line - 1;
    }
    /* The format's own newline ends the line even when the text was cut. */
    size_t fl = strlen(fmt);
    int ends = (fl && fmt[fl - 1] == '\n') || (t_len && t_line[t_len - 1] == '\n');
    if (!ends)
        return;
    while (t_len && t_line[t_len - 1] == '\n')
        t_len--;
    t_line[t_len] = 0;
    mm_log_at(level_of(level), "%s", t_line);
    t_len = 0;
}

void mm_fs_log_through_mm(void)
{
    fuse_set_log_func(from_libfuse);
}

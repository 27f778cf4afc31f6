#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

int mm_log_verbose = 0;

int mm_err_set(mm_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

void mm_err_prefix(mm_err *err, const char *fmt, ...)
{
    if (!err)
        return;
    char pre[1024], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    /* Truncation of very long messages is acceptable; assemble by hand to keep it explicit. */
    size_t n = strlen(pre);
    if (n > sizeof err->msg - 3)
        n = sizeof err->msg - 3;
    memcpy(err->msg, pre, n);
    memcpy(err->msg + n, ": ", 2);
    n += 2;
    size_t m = strnlen(old, sizeof old - 1);
    if (m > sizeof err->msg - 1 - n)
        m = sizeof err->msg - 1 - n;
    memcpy(err->msg + n, old, m);
    err->msg[n + m] = 0;
}

typedef enum log_sink { SINK_STDERR, SINK_FILE, SINK_SYSLOG } log_sink;
/* Set once before other threads start (mm_log_to_*), read-only afterwards. */
static log_sink g_sink = SINK_STDERR;
static int g_log_fd = 2;
static char *g_context;

static void set_context(const char *context)
{
    free(g_context);
    g_context = context ? mm_xstrdup(context) : NULL;
}

void mm_log_to_file(int fd, const char *context)
{
    g_log_fd = fd;
    set_context(context);
    g_sink = SINK_FILE;
}

void mm_log_to_syslog(const char *context)
{
    set_context(context);
    /* No LOG_CONS: with no syslog daemon the lines are dropped, never written over the console. */
    openlog("mergemount", LOG_PID, LOG_DAEMON);
    g_sink = SINK_SYSLOG;
}

/* "2025-06-01T12:00:00.123+0200 ": log files are read later, often beside other programs' logs. */
static size_t format_time(char *buf, size_t len)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (!localtime_r(&ts.tv_sec, &tm))
        return 0;
    char date[32], zone[8];
    if (!strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm) || !strftime(zone, sizeof zone, "%z", &tm))
        return 0;
    int n = snprintf(buf, len, "%s.%03ld%s ", date, ts.tv_nsec / 1000000, zone);
    return n > 0 && (size_t)n < len ? (size_t)n : 0;
}

/* The one place a line is made, whatever the sink. One write(2) (or syslog()) per line keeps lines
 * from concurrent threads whole. */
static void log_line(mm_log_level level, const char *fmt, va_list ap)
{
    static const char *const names[] = {"error: ", "warning: ", "", "debug: "};
    static const int priorities[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
    char line[4096];
    size_t n = g_sink == SINK_FILE ? format_time(line, sizeof line) : 0;
    int m = snprintf(line + n, sizeof line - n, "%s%s%s%s", g_sink == SINK_SYSLOG ? "" : "mergemount: ",
                     names[level], g_context ? g_context : "", g_context ? ": " : "");
    if (m < 0)
        return;
    n += (size_t)m;
    if (n > sizeof line - 2) /* a context as long as PATH_MAX */
        n = sizeof line - 2;
    m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    if (m < 0)
        return;
    size_t len = n + (size_t)m;
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    if (g_sink == SINK_SYSLOG) {
        line[len] = 0;
        syslog(priorities[level], "%s", line);
        return;
    }
    line[len++] = '\n';
    ssize_t w = write(g_sink == SINK_FILE ? g_log_fd : 2, line, len);
    (void)w;
}

void mm_log_at(mm_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_line(level, fmt, ap);
    va_end(ap);
}

#define MM_LOG_FN(fn, level, cond)                                                                   \
    void fn(const char *fmt, ...)                                                                    \
    {                                                                                                \
        if (!(cond))                                                                                 \
            return;                                                                                  \
        va_list ap;                                                                                  \
        va_start(ap, fmt);                                                                           \
        log_line(level, fmt, ap);                                                                    \
        va_end(ap);                                                                                  \
    }
MM_LOG_FN(mm_log_warn, MM_LOG_WARN, 1)
MM_LOG_FN(mm_log_error, MM_LOG_ERROR, 1)
MM_LOG_FN(mm_log_info, MM_LOG_INFO, 1)
MM_LOG_FN(mm_log_debug, MM_LOG_DEBUG, mm_log_verbose >= 1)

void *mm_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        abort();
    return p;
}

void *mm_xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p)
        abort();
    return p;
}

void *mm_xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        abort();
    return p;
}

char *mm_xstrdup(const char *s)
{
    return mm_xstrndup(s, strlen(s));
}

char *mm_xstrndup(const char *s, size_t n)
{
    char *p = mm_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

char *mm_xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *p;
    int n = vasprintf(&p, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort();
    return p;
}

static void buf_reserve(mm_buf *b, size_t extra);

void mm_buf_append(mm_buf *b, const void *p, size_t n)
{
    buf_reserve(b, n);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}

void mm_buf_puts(mm_buf *b, const char *s)
{
    mm_buf_append(b, s, strlen(s));
}

static void buf_reserve(mm_buf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    b->data = mm_xrealloc(b->data, cap);
    b->cap = cap;
}

void mm_buf_printf(mm_buf *b, const char *fmt, ...)
{
    /* Format into the free space; if it did not fit, grow to the reported size and format again. */
    buf_reserve(b, 64);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort();
    if ((size_t)n >= b->cap - b->len) {
        buf_reserve(b, (size_t)n);
        va_start(ap, fmt);
        vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

void mm_buf_free(mm_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int mm_file_read_all(const char *path, size_t max_size, char **data, size_t *len, mm_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return mm_err_set(err, -errno, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return mm_err_set(err, -e, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return mm_err_set(err, -EINVAL, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > max_size) {
        close(fd);
        return mm_err_set(err, -EFBIG, "%s: file too large (%lld bytes, limit %zu)", path,
                          (long long)st.st_size, max_size);
    }
    size_t n = (size_t)st.st_size;
    char *p = mm_xmalloc(n + 1);
    int rc = mm_pread_full(fd, p, n, 0);
    close(fd);
    if (rc < 0) {
        free(p);
        return mm_err_set(err, rc, "%s: cannot read: %s", path, strerror(-rc));
    }
    p[n] = 0;
    *data = p;
    if (len)
        *len = n;
    return 0;
}

int mm_preadv_full(int fd, const struct iovec *iov, size_t n, uint64_t off)
{
    struct iovec left[MM_PREADV_MAX];
    if (n > MM_PREADV_MAX)
        return -EINVAL;
    memcpy(left, iov, n * sizeof *iov);
    struct iovec *at = left;
    while (n > 0 && at->iov_len == 0)
        at++, n--;
    while (n > 0) {
        ssize_t r = preadv(fd, at, (int)n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            return -EIO;
        off += (uint64_t)r;
        /* past the pieces read whole, then into the one read in part */
        for (size_t got = (size_t)r; n > 0 && (got > 0 || at->iov_len == 0);) {
            const size_t k = got < at->iov_len ? got : at->iov_len;
            at->iov_base = (char *)at->iov_base + k;
            at->iov_len -= k;
            got -= k;
            if (at->iov_len == 0)
                at++, n--;
        }
    }
    return 0;
}

int mm_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
    const struct iovec one = {buf, len};
    return mm_preadv_full(fd, &one, 1, off);
}

size_t mm_utf8_valid_len(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        unsigned c = p[i];
        size_t n;
        /* The range of the second byte depends on the first: it is what rules out overlong forms
         * (E0, F0), surrogates (ED) and code points above U+10FFFF (F4). */
        unsigned lo = 0x80, hi = 0xbf;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            lo = c == 0xe0 ? 0xa0 : 0x80;
            hi = c == 0xed ? 0x9f : 0xbf;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            lo = c == 0xf0 ? 0x90 : 0x80;
            hi = c == 0xf4 ? 0x8f : 0xbf;
        } else {
            return i;
        }
        if (len - i <= n || p[i + 1] < lo || p[i + 1] > hi)
            return i;
        for (size_t k = 2; k <= n; k++)
            if ((p[i + k] & 0xc0) != 0x80)
                return i;
        i += n + 1;
    }
    return len;
}

size_t mm_utf8_next(const char *s, uint32_t *cp)
{
    const unsigned char *p = (const unsigned char *)s;
    if (p[0] < 0x80) {
        *cp = p[0];
        return 1;
    }
    size_t n = p[0] >= 0xf0 ? 4 : p[0] >= 0xe0 ? 3 : 2;
    uint32_t v = p[0] & (0x7fu >> n); /* the lead byte keeps 7 - n payload bits */
    for (size_t k = 1; k < n; k++)
        v = (v << 6) | (p[k] & 0x3fu);
    *cp = v;
    return n;
}

size_t mm_utf8_put(uint32_t cp, char *out)
{
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    size_t n = cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    static const unsigned char lead[5] = {0, 0, 0xc0, 0xe0, 0xf0};
    for (size_t k = n - 1; k > 0; k--, cp >>= 6)
        o[k] = (unsigned char)(0x80 | (cp & 0x3f));
    o[0] = (unsigned char)(lead[n] | cp);
    return n;
}

const char *mm_quote(char *buf, size_t size, const char *s, size_t len)
{
    size_t o = 0, i = 0;
    buf[o++] = '\'';
    while (i < len) {
        char esc[8];
        size_t n = 1;
        unsigned char c = (unsigned char)s[i];
        if (c == '\n' || c == '\t' || c == '\r' || c == '\\' || c == '\'') {
            snprintf(esc, sizeof esc, "\\%c", c == '\n' ? 'n' : c == '\t' ? 't' : c == '\r' ? 'r' : (char)c);
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof esc, "\\x%02x", c);
        } else if (c < 0x80) {
            esc[0] = (char)c, esc[1] = 0;
        } else {
            /* one whole UTF-8 character, or one escaped byte where the text is not UTF-8 */
            n = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
            if (n > len - i || mm_utf8_valid_len(s + i, n) != n) {
                n = 1;
                snprintf(esc, sizeof esc, "\\x%02x", c);
            } else {
                memcpy(esc, s + i, n);
                esc[n] = 0;
            }
        }
        size_t e = strlen(esc);
        if (o + e + 5 > size) { /* room for "...'" and the NUL */
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        memcpy(buf + o, esc, e);
        o += e;
        i += n;
    }
    buf[o++] = '\'';
    buf[o] = 0;
    return buf;
}

char *mm_path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    return mm_xasprintf("%.*s/%s", (int)n, dir, name);
}

char *mm_path_absolute(const char *path)
{
    if (path[0] == '/')
        return mm_xstrdup(path);
    char *cwd = getcwd(NULL, 0);
    if (!cwd)
        return mm_xstrdup(path);
    char *p = mm_path_join(cwd, path);
    free(cwd);
    return p;
}

static int mkdir_one(const char *path, unsigned mode)
{
    if (mkdir(path, (mode_t)mode) == 0)
        return 0;
    int e = errno;
    struct stat st;
    if (e == EEXIST && stat(path, &st) == 0)
        return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
    return -e;
}

int mm_mkdir_p(const char *path, unsigned mode)
{
    char *p = mm_xstrdup(path);
    int rc = 0;
    for (char *s = strchr(p + 1, '/'); s && !rc; s = strchr(s + 1, '/')) {
        *s = 0;
        rc = mkdir_one(p, mode);
        *s = '/';
    }
    if (!rc)
        rc = mkdir_one(p, mode);
    free(p);
    return rc;
}

size_t mm_edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t *row = mm_xmalloc((lb + 1) * sizeof *row);
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    size_t d = row[lb];
    free(row);
    return d;
}

const char *mm_suggest(const char *word, const char *const *candidates, size_t n)
{
    const char *best = NULL;
    size_t bestd = (size_t)-1;
    for (size_t i = 0; i < n; i++) {
        size_t d = mm_edit_distance(word, candidates[i]);
        if (d < bestd) {
            bestd = d;
            best = candidates[i];
        }
    }
    /* A typo is a few edits, relative to the word's length. */
    size_t limit = strlen(word) / 3 + 1;
    if (limit > 3)
        limit = 3;
    return bestd <= limit ? best : NULL;
}

void mm_format_double(double v, char *buf, size_t len)
{
    if (isnan(v)) {
        snprintf(buf, len, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(buf, len, v > 0 ? "Infinity" : "-Infinity");
        return;
    }
    if (v == 0) {
        snprintf(buf, len, signbit(v) ? "-0.0" : "0.0");
        return;
    }
    /* Shortest round-trip digits, then Python's float repr layout: fixed notation for decimal
     * exponents in [-4, 16), scientific with a two-digit exponent otherwise. */
    char tmp[64];
    int prec;
    for (prec = 0; prec < 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    char digits[32];
    size_t nd = 0;
    const char *p = tmp;
    int neg = 0;
    if (*p == '-') {
        neg = 1;
        p++;
    }
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9')
            digits[nd++] = *p;
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = 0;
    int ex = atoi(p + 1);
    mm_buf b = {0};
    if (neg)
        mm_buf_puts(&b, "-");
    if (ex >= -4 && ex < 16) {
        if (ex < 0) {
            mm_buf_puts(&b, "0.");
            for (int i = 0; i < -ex - 1; i++)
                mm_buf_puts(&b, "0");
            mm_buf_puts(&b, digits);
        } else {
            for (int i = 0; i <= ex; i++)
                mm_buf_append(&b, (size_t)i < nd ? &digits[i] : "0", 1);
            mm_buf_puts(&b, ".");
            if ((size_t)ex + 1 < nd)
                mm_buf_puts(&b, digits + ex + 1);
            else
                mm_buf_puts(&b, "0");
        }
    } else {
        mm_buf_append(&b, digits, 1);
        if (nd > 1) {
            mm_buf_puts(&b, ".");
            mm_buf_puts(&b, digits + 1);
        }
        mm_buf_printf(&b, "e%c%02d", ex < 0 ? '-' : '+', ex < 0 ? -ex : ex);
    }
    snprintf(buf, len, "%s", b.data);
    mm_buf_free(&b);
}

void mm_cond_init_monotonic(pthread_cond_t *c)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(c, &ca);
    pthread_condattr_destroy(&ca);
}

int mm_thread_start_quiet(pthread_t *t, void *(*fn)(void *), void *arg)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(t, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

struct timespec mm_deadline_in(uint64_t ns)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    ns += (uint64_t)t.tv_nsec;
    t.tv_sec += (time_t)(ns / 1000000000u);
    t.tv_nsec = (long)(ns % 1000000000u);
    return t;
}

/* Small shared helpers: the error record every fallible function fills, logging, and string/file utilities.
 *
 * Error convention (whole project): a function returns 0 on success or a negative errno; when it takes an
 * `mm_err *` it also leaves a message for people there, already carrying the place
 * ("merge.yml:12:5: unknown merge_method 'linaer' (did you mean 'linear'?)"). `err` may be NULL. */
#ifndef MM_UTIL_H
#define MM_UTIL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

typedef struct mm_err {
    char msg[2048];
} mm_err;

/* Formats the message into err (if non-NULL) and returns `code` (a negative errno) so callers can
 * write `return mm_err_set(err, -EINVAL, "...")`. */
int mm_err_set(mm_err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prepends "prefix: " to an existing message (used to add a file name to a lower-level message). */
void mm_err_prefix(mm_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Logging: one line per call, "mergemount: error: ..." ("warning: ", "", "debug: "), to the sink (stderr
 * until mm_log_to_file or mm_log_to_syslog). Thread-safe: one write(2) or syslog() per line.
 * mm_log_debug lines need mm_log_verbose >= 1. */
extern int mm_log_verbose;
void mm_log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void mm_log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void mm_log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void mm_log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A line at `level` whatever mm_log_verbose says: for messages whose sender already decided to print
 * them (libfuse's, fs/fuselog.c). */
typedef enum mm_log_level { MM_LOG_ERROR, MM_LOG_WARN, MM_LOG_INFO, MM_LOG_DEBUG } mm_log_level;
void mm_log_at(mm_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Where lines go from now on, for a process whose stderr nobody reads (a daemon: /dev/null). Call once,
 * before any other thread may log. `context` (copied; may be NULL) goes into every line after the level,
 * "mergemount: error: CONTEXT: ...": the mountpoint, so that lines of several mounts in one journal or
 * file can be told apart.
 * mm_log_to_file: appends to fd (open with O_APPEND; owned from now on), each line prefixed with the
 * local time ("2025-06-01T12:00:00.123+0200 mergemount: error: ...").
 * mm_log_to_syslog: syslog(3) with ident "mergemount", the pid and facility LOG_DAEMON (journald takes
 * it from /dev/log), at the level's priority; the text omits the "mergemount: " the ident carries. */
void mm_log_to_file(int fd, const char *context);
void mm_log_to_syslog(const char *context);

/* The number of elements of an array (not a pointer). */
#define MM_COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Allocation that aborts on out-of-memory: used only for small, bounded metadata (never tensor data),
 * where there is no sensible recovery and checking every call would hide the logic. */
void *mm_xmalloc(size_t n);
void *mm_xcalloc(size_t n, size_t sz);
void *mm_xrealloc(void *p, size_t n);
char *mm_xstrdup(const char *s);
char *mm_xstrndup(const char *s, size_t n);
char *mm_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A growable byte string. Zero-initialise to start. `data` is always NUL-terminated once anything was
 * appended. */
typedef struct mm_buf {
    char *data;
    size_t len, cap;
} mm_buf;
void mm_buf_append(mm_buf *b, const void *p, size_t n);
void mm_buf_puts(mm_buf *b, const char *s);
void mm_buf_printf(mm_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void mm_buf_free(mm_buf *b);

/* Reads a whole regular file into a NUL-terminated heap buffer. Refuses files larger than max_size
 * (-EFBIG). Returns 0 or -errno with a message naming the path. */
int mm_file_read_all(const char *path, size_t max_size, char **data, size_t *len, mm_err *err);

/* pread() that loops over short reads. Returns 0, -EIO on early EOF, or -errno. */
int mm_pread_full(int fd, void *buf, size_t len, uint64_t off);
/* The same for preadv: fills iov[0..n) (n <= MM_PREADV_MAX, else -EINVAL) from the bytes at off. */
#define MM_PREADV_MAX 8
struct iovec;
int mm_preadv_full(int fd, const struct iovec *iov, size_t n, uint64_t off);

/* The length of the longest prefix of s[0..len) that is well-formed UTF-8 (RFC 3629: no overlong forms,
 * no surrogates, nothing above U+10FFFF): len when all of it is. For text from files we did not write
 * that must be UTF-8 (safetensors headers, JSON), so the error can say where it goes wrong. */
size_t mm_utf8_valid_len(const char *s, size_t len);

/* One code point of well-formed UTF-8 (checked before, e.g. with mm_utf8_valid_len): its value into
 * *cp; returns its length in bytes (1 to 4). */
size_t mm_utf8_next(const char *s, uint32_t *cp);
/* cp (at most U+10FFFF, no surrogate) as UTF-8 into out (room for 4 bytes); returns the length. */
size_t mm_utf8_put(uint32_t cp, char *out);

/* s[0..len) as a quoted string for a message: 'text', with \n, \t, \r, \\, \' and \xNN for other
 * bytes below 0x20, 0x7f and bytes that are not UTF-8, cut with "..." to fit buf (size >= 16). For
 * names from files we did not write (tokens, pieces), which can hold anything. Returns buf. */
const char *mm_quote(char *buf, size_t size, const char *s, size_t len);

/* Joins a directory and a file name with one '/'. Heap result. */
char *mm_path_join(const char *dir, const char *name);
/* `path` made absolute against the working directory (unchanged if it already is, or if the working
 * directory cannot be read: the later open reports it). Heap result. For paths a daemon uses after
 * fuse_daemonize has changed its directory to /. */
char *mm_path_absolute(const char *path);
/* mkdir -p: creates `path` and any missing parents with `mode` (before the umask). 0, -ENOTDIR when a
 * component exists and is not a directory, or the -errno of the failing mkdir. */
int mm_mkdir_p(const char *path, unsigned mode);

/* Levenshtein distance, for "did you mean" suggestions. */
size_t mm_edit_distance(const char *a, const char *b);
/* Returns the candidate closest to `word` if it is close enough to be a plausible typo, else NULL. */
const char *mm_suggest(const char *word, const char *const *candidates, size_t n);

/* Timed waits that clock changes cannot stretch: mm_cond_init_monotonic makes c's timed waits use
 * CLOCK_MONOTONIC, and mm_deadline_in gives the absolute time `ns` nanoseconds from now on that clock. */
void mm_cond_init_monotonic(pthread_cond_t *c);
struct timespec mm_deadline_in(uint64_t ns);

/* pthread_create of a thread that takes no process signals (its mask is full): in the daemon SIGINT,
 * SIGTERM and SIGHUP must reach the threads libfuse expects. Returns pthread_create's result. */
int mm_thread_start_quiet(pthread_t *t, void *(*fn)(void *), void *arg);

/* Python's repr() of a float ("0.5", "1e-05", "10000.0") into buf: the shortest text that reads back
 * to the same double. Used wherever we write numbers the way mergekit's Python would. */
void mm_format_double(double v, char *buf, size_t len);

#endif

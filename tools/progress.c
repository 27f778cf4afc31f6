#include "progress.h"

#include "base/util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { BAR_WIDTH = 30 };
static const int64_t k_redraw_interval_ns = 100 * 1000 * 1000;

struct mm_progress {
    int enabled;
    int finished;
    uint64_t total;
    int64_t start_ns;
    atomic_uint_fast64_t done;
    atomic_int_fast64_t next_draw_ns;
    /* Serialises drawing (and guards last_len) so two threads never interleave half-lines. */
    pthread_mutex_t draw_lock;
    size_t last_len;
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Decimal units with three significant digits, the way download tools print sizes. */
static void format_bytes(double v, char *out, size_t n)
{
    static const char *const units[] = {"B", "kB", "MB", "GB", "TB", "PB"};
    size_t u = 0;
    while (v >= 1000 && u + 1 < MM_COUNT(units)) {
        v /= 1000;
        u++;
    }
    if (u == 0)
        snprintf(out, n, "%.0f B", v);
    else
        snprintf(out, n, "%.*f %s", v < 10 ? 2 : v < 100 ? 1 : 0, v, units[u]);
}

static void format_duration(double seconds, char *out, size_t n)
{
    uint64_t s = seconds > 0 ? (uint64_t)(seconds + 0.5) : 0;
    if (s >= 3600)
        snprintf(out, n, "%llu:%02u:%02u", (unsigned long long)(s / 3600), (unsigned)(s / 60 % 60),
                 (unsigned)(s % 60));
    else
        snprintf(out, n, "%u:%02u", (unsigned)(s / 60), (unsigned)(s % 60));
}

/* Called with draw_lock held. */
static void draw(mm_progress *p, int final)
{
    uint64_t done = atomic_load(&p->done);
    if (done > p->total)
        done = p->total;
    double elapsed = (double)(now_ns() - p->start_ns) / 1e9;
    double frac = p->total ? (double)done / (double)p->total : 1.0;

    char bar[BAR_WIDTH + 1];
    size_t filled = (size_t)(frac * BAR_WIDTH);
    memset(bar, '#', filled);
    memset(bar + filled, '.', BAR_WIDTH - filled);
    bar[BAR_WIDTH] = 0;

    char sdone[32], stotal[32], srate[32], stime[32];
    format_bytes((double)done, sdone, sizeof sdone);
    format_bytes((double)p->total, stotal, sizeof stotal);
    /* A rate from the first few milliseconds is noise; show it once there is something to average
     * (the final line always has one). */
    int have_rate = done > 0 && elapsed > (final ? 0 : 0.2);
    double rate = have_rate ? (double)done / elapsed : 0;
    if (have_rate)
        format_bytes(rate, srate, sizeof srate);
    else
        snprintf(srate, sizeof srate, "--");

    mm_buf line = {0};
    mm_buf_printf(&line, "\r[%s]  %s / %s  %s/s  ", bar, sdone, stotal, srate);
    if (final) {
        format_duration(elapsed, stime, sizeof stime);
        mm_buf_printf(&line, "done in %s", stime);
    } else if (have_rate) {
        format_duration((double)(p->total - done) / rate, stime, sizeof stime);
        mm_buf_printf(&line, "ETA %s", stime);
    } else {
        mm_buf_puts(&line, "ETA --:--");
    }
    /* Blank out what is left of a longer previous line (escape codes would garble a non-terminal). */
    size_t len = line.len;
    while (line.len < p->last_len)
        mm_buf_puts(&line, " ");
    p->last_len = len;
    if (final)
        mm_buf_puts(&line, "\n");
    ssize_t w = write(2, line.data, line.len);
    (void)w;
    mm_buf_free(&line);
}

mm_progress *mm_progress_new(uint64_t total, int mode)
{
    mm_progress *p = mm_xcalloc(1, sizeof *p);
    p->enabled = mode < 0 ? isatty(2) : mode != 0;
    p->total = total;
    p->start_ns = now_ns();
    atomic_init(&p->done, 0);
    atomic_init(&p->next_draw_ns, p->start_ns + k_redraw_interval_ns);
    pthread_mutex_init(&p->draw_lock, NULL);
    if (p->enabled)
        draw(p, 0);
    return p;
}

void mm_progress_add(mm_progress *p, uint64_t bytes)
{
    atomic_fetch_add(&p->done, bytes);
    if (!p->enabled)
        return;
    int64_t now = now_ns();
    int_fast64_t next = atomic_load(&p->next_draw_ns);
    if (now < next || !atomic_compare_exchange_strong(&p->next_draw_ns, &next, now + k_redraw_interval_ns))
        return;
    if (pthread_mutex_trylock(&p->draw_lock) != 0)
        return;
    draw(p, 0);
    pthread_mutex_unlock(&p->draw_lock);
}

void mm_progress_finish(mm_progress *p, int completed)
{
    if (p->finished)
        return;
    p->finished = 1;
    if (!p->enabled)
        return;
    pthread_mutex_lock(&p->draw_lock);
    if (completed) {
        draw(p, 1);
    } else {
        ssize_t w = write(2, "\n", 1);
        (void)w;
    }
    pthread_mutex_unlock(&p->draw_lock);
}

void mm_progress_free(mm_progress *p)
{
    if (!p)
        return;
    mm_progress_finish(p, 0);
    pthread_mutex_destroy(&p->draw_lock);
    free(p);
}

#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* More threads than this gains nothing: each computation is memory-bound well before. */
#define MAX_THREADS 64

typedef struct job {
    struct job *next;
    mm_pool_fn fn;
    void *arg;
} job;

struct mm_pool {
    pthread_mutex_t lock;
    pthread_cond_t work;
    job *head, *tail;
    bool stop;
    size_t n;
    pthread_t threads[MAX_THREADS];
};

static void *pool_main(void *arg)
{
    mm_pool *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->head && !p->stop)
            pthread_cond_wait(&p->work, &p->lock);
        job *j = p->head;
        if (!j)
            break; /* stopping, and nothing is left */
        p->head = j->next;
        if (!p->head)
            p->tail = NULL;
        pthread_mutex_unlock(&p->lock);
        j->fn(j->arg);
        free(j);
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int mm_pool_start(size_t threads, mm_pool **out, mm_err *err)
{
    *out = NULL;
    if (threads == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cpus > 0 ? (size_t)cpus : 1;
    }
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    mm_pool *p = calloc(1, sizeof *p);
    if (!p)
        return mm_err_set(err, -ENOMEM, "out of memory");
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->work, NULL);
    int rc = 0;
    while (p->n < threads && (rc = mm_thread_start_quiet(&p->threads[p->n], pool_main, p)) == 0)
        p->n++;
    if (p->n == 0) {
        pthread_cond_destroy(&p->work);
        pthread_mutex_destroy(&p->lock);
        free(p);
        return mm_err_set(err, -rc, "cannot start the compute threads: %s", strerror(rc));
    }
    *out = p;
    return 0;
}

int mm_pool_submit(mm_pool *p, mm_pool_fn fn, void *arg)
{
    job *j = malloc(sizeof *j);
    if (!j)
        return -ENOMEM;
    j->next = NULL;
    j->fn = fn;
    j->arg = arg;
    pthread_mutex_lock(&p->lock);
    if (p->tail)
        p->tail->next = j;
    else
        p->head = j;
    p->tail = j;
    pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->lock);
    return 0;
}

void mm_pool_stop(mm_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->lock);
    for (size_t i = 0; i < p->n; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

#include "scratch.h"

#include <pthread.h>
#include <stdlib.h>

typedef struct scratch {
    void *p[MM_SCRATCH_SLOTS];
    size_t cap[MM_SCRATCH_SLOTS];
    unsigned char busy[MM_SCRATCH_SLOTS];
} scratch;

static pthread_key_t g_key;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_ok;

static void scratch_free(void *arg)
{
    scratch *s = arg;
    for (int k = 0; k < MM_SCRATCH_SLOTS; k++)
        free(s->p[k]);
    free(s);
}

static void scratch_init(void)
{
    g_ok = pthread_key_create(&g_key, scratch_free) == 0;
}

/* This thread's record, made on first use; NULL when it cannot be had (then every borrow mallocs). */
static scratch *mine(void)
{
    pthread_once(&g_once, scratch_init);
    if (!g_ok)
        return NULL;
    scratch *s = pthread_getspecific(g_key);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (s && pthread_setspecific(g_key, s) != 0) {
            free(s);
            s = NULL;
        }
    }
    return s;
}

void *mm_scratch_borrow(mm_scratch_slot slot, size_t n)
{
    scratch *s = mine();
    if (!s || s->busy[slot])
        return malloc(n ? n : 1);
    if (s->cap[slot] < n || !s->p[slot]) {
        free(s->p[slot]);
        s->p[slot] = malloc(n ? n : 1);
        s->cap[slot] = s->p[slot] ? n : 0;
        if (!s->p[slot])
            return NULL;
    }
    s->busy[slot] = 1;
    return s->p[slot];
}

void mm_scratch_return(mm_scratch_slot slot, void *p)
{
    if (!p)
        return;
    scratch *s = g_ok ? pthread_getspecific(g_key) : NULL;
    if (s && s->busy[slot] && s->p[slot] == p)
        s->busy[slot] = 0;
    else
        free(p);
}

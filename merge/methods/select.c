/* Exact selection by bit-pattern histograms (see select.h, docs/merge-contract.md D5).
 *
 * Every value maps to a 32-bit key whose unsigned order is the value order (mm_select_key). The k
 * largest are the k smallest of the complemented keys, so the search below only ever looks for the
 * k-th smallest key. Pass 1 histograms the high 16 bits and finds the bucket that holds the k-th key
 * and its rank inside that bucket. If all keys in the bucket's half of the key space (the keys of
 * non-negative or of negative values) share their low 16 bits, the key is known after one pass: that
 * holds for bf16 values, whose float32 form has zero low bits (all ones once a negative value's key
 * is complemented). Otherwise pass 2 histograms the low 16 bits of the keys inside that one bucket. */
#include "select.h"
#include "base/vector.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BINS 65536

struct mm_selector {
    uint64_t k;           /* rank sought, 1-based, in ascending order of the searched keys */
    int largest;          /* searched key = ~key when selecting the largest */
    int passes;           /* passes completed */
    int done;
    uint64_t fed;         /* values fed in the current pass */
    uint32_t low_or[2], low_and[2]; /* low 16 bits of the searched keys in each half, pass 1 */
    uint32_t bucket;      /* high 16 bits of the k-th searched key (after pass 1) */
    uint64_t rank;        /* rank of the k-th key inside its bucket, 1-based (after pass 1) */
    uint32_t thr;         /* threshold as a searched key (after the last pass) */
    uint64_t ties_kept, ties_total;
    uint64_t hist[BINS];
    /* Counting goes to two 32-bit tables, alternating between elements: consecutive increments of
     * one bin would wait on each other through memory. Added into hist at the end of a pass, and
     * every 2^31 elements so that they cannot overflow. */
    uint32_t sub[2][BINS];
    uint64_t unflushed;
};

static void flush(mm_selector *s)
{
    for (uint32_t b = 0; b < BINS; b++) {
        s->hist[b] += (uint64_t)s->sub[0][b] + s->sub[1][b];
        s->sub[0][b] = s->sub[1][b] = 0;
    }
    s->unflushed = 0;
}

/* Counts bins[0..n) (each < BINS). */
static void count(mm_selector *s, const uint32_t *bins, size_t n)
{
    if (s->unflushed + n > (1ull << 31))
        flush(s);
    s->unflushed += n;
    size_t i = 0;
    for (; i + 2 <= n; i += 2) {
        s->sub[0][bins[i]]++;
        s->sub[1][bins[i + 1]]++;
    }
    if (i < n)
        s->sub[0][bins[i]]++;
}

uint32_t mm_select_key(float x)
{
    return mm_select_key_inline(x);
}

/* The counts of the current pass back to "nothing fed". */
static void clear_counts(mm_selector *s)
{
    s->fed = 0;
    s->unflushed = 0;
    s->low_or[0] = s->low_or[1] = 0;
    s->low_and[0] = s->low_and[1] = 0xFFFFu;
    memset(s->hist, 0, sizeof s->hist);
    memset(s->sub, 0, sizeof s->sub);
}

mm_selector *mm_selector_new(uint64_t k, int largest)
{
    mm_selector *s = malloc(sizeof *s);
    if (!s)
        return NULL;
    memset(s, 0, sizeof *s);
    s->k = k ? k : 1;
    s->largest = largest != 0;
    s->low_and[0] = s->low_and[1] = 0xFFFFu;
    return s;
}

mm_selector *mm_selector_fork(const mm_selector *s)
{
    mm_selector *f = malloc(sizeof *f);
    if (!f)
        return NULL;
    /* the search state (k, pass, bucket, rank) is copied field by field: the tables are cleared */
    f->k = s->k;
    f->largest = s->largest;
    f->passes = s->passes;
    f->done = s->done;
    f->bucket = s->bucket;
    f->rank = s->rank;
    f->thr = s->thr;
    f->ties_kept = s->ties_kept;
    f->ties_total = s->ties_total;
    clear_counts(f);
    return f;
}

void mm_selector_merge(mm_selector *s, mm_selector *part)
{
    flush(s);
    flush(part);
    for (uint32_t b = 0; b < BINS; b++)
        s->hist[b] += part->hist[b];
    s->fed += part->fed;
    for (int h = 0; h < 2; h++) {
        s->low_or[h] |= part->low_or[h];
        s->low_and[h] &= part->low_and[h];
    }
    clear_counts(part);
}

void mm_selector_free(mm_selector *s)
{
    free(s);
}

int mm_selector_pass_needed(const mm_selector *s)
{
    return !s->done;
}

/* Pass 1: bins[i] = the high 16 bits of the searched key of keys[i] (flipped when selecting the
 * largest), with the OR/AND of the low 16 bits per half of the key space (accumulated in registers
 * with masks: per-element read-modify-writes of the selector's fields would serialise the loop); then
 * the histogram. One loop from the caller's keys to the bins. */
MM_VECTOR_LOOP static void feed_first(mm_selector *s, const uint32_t *keys, uint32_t flip, uint32_t *bins, size_t n)
{
    uint32_t or0 = 0, or1 = 0, and0 = 0xFFFFFFFFu, and1 = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        const uint32_t k = keys[i] ^ flip, upper = 0u - (k >> 31); /* all ones for the upper half */
        or1 |= k & upper;
        or0 |= k & ~upper;
        and1 &= k | ~upper;
        and0 &= k | upper;
        bins[i] = k >> 16;
    }
    s->low_or[0] |= or0 & 0xFFFFu;
    s->low_or[1] |= or1 & 0xFFFFu;
    s->low_and[0] &= and0;
    s->low_and[1] &= and1;
    count(s, bins, n);
}

/* Pass 2: the low 16 bits of the searched keys inside the bucket. */
static void feed_second(mm_selector *s, const uint32_t *keys, uint32_t flip, uint32_t *bins, size_t n)
{
    size_t in = 0;
    for (size_t i = 0; i < n; i++) {
        const uint32_t k = keys[i] ^ flip;
        if (k >> 16 == s->bucket)
            bins[in++] = k & 0xFFFFu;
    }
    count(s, bins, in);
}

/* Bins are computed a block at a time into a buffer, then counted. */
enum { FEED_BLOCK = 512 };

void mm_selector_feed_keys(mm_selector *s, const uint32_t *keys, size_t n)
{
    const uint32_t flip = s->largest ? 0xFFFFFFFFu : 0;
    uint32_t bins[FEED_BLOCK];
    s->fed += n;
    for (size_t at = 0; at < n; at += FEED_BLOCK) {
        const size_t m = n - at < FEED_BLOCK ? n - at : FEED_BLOCK;
        (s->passes == 0 ? feed_first : feed_second)(s, keys + at, flip, bins, m);
    }
}

void mm_selector_feed(mm_selector *s, const float *values, size_t n)
{
    uint32_t keys[FEED_BLOCK];
    for (size_t at = 0; at < n; at += FEED_BLOCK) {
        const size_t m = n - at < FEED_BLOCK ? n - at : FEED_BLOCK;
        for (size_t i = 0; i < m; i++)
            keys[i] = mm_select_key_inline(values[at + i]);
        mm_selector_feed_keys(s, keys, m);
    }
}

/* The bin of hist that holds the element of rank `rank` (1-based, clamped to the total), and how many
 * elements lie in the bins before it. */
static uint32_t find_bin(const uint64_t *hist, uint64_t rank, uint64_t *before)
{
    uint64_t acc = 0;
    uint32_t last = 0;
    for (uint32_t b = 0; b < BINS; b++) {
        if (!hist[b])
            continue;
        last = b;
        if (acc + hist[b] >= rank) {
            *before = acc;
            return b;
        }
        acc += hist[b];
    }
    /* rank beyond the total (k > N): the largest element; the caller's contract says k <= N. */
    *before = acc - hist[last];
    return last;
}

static void finish(mm_selector *s, uint32_t thr, uint64_t rank_in_bin, uint64_t bin_count)
{
    s->thr = thr;
    s->ties_kept = rank_in_bin < bin_count ? rank_in_bin : bin_count;
    s->ties_total = bin_count;
    s->done = 1;
}

void mm_selector_end_pass(mm_selector *s)
{
    if (s->done)
        return;
    flush(s);
    uint64_t before = 0;
    if (s->passes == 0) {
        if (s->fed == 0) { /* nothing fed: no threshold; report the NaN key with nothing kept */
            finish(s, s->largest ? ~MM_SELECT_KEY_NAN : MM_SELECT_KEY_NAN, 0, 0);
            return;
        }
        s->bucket = find_bin(s->hist, s->k, &before);
        s->rank = s->k - before;
        const uint32_t half = s->bucket >> 15;
        if (s->low_or[half] == (s->low_and[half] & 0xFFFFu)) {
            finish(s, s->bucket << 16 | s->low_or[half], s->rank, s->hist[s->bucket]);
            return;
        }
        memset(s->hist, 0, sizeof s->hist);
    } else {
        uint32_t low = find_bin(s->hist, s->rank, &before);
        finish(s, s->bucket << 16 | low, s->rank - before, s->hist[low]);
        return;
    }
    s->passes++;
    s->fed = 0;
}

int mm_selector_pass(const mm_selector *s)
{
    return s->passes; /* a pass that ends the selection is not counted as completed (finish) */
}

uint64_t mm_selector_bin_count(const mm_selector *s, uint32_t b)
{
    return s->hist[b] + s->sub[0][b] + s->sub[1][b]; /* flushed, and not yet flushed */
}

/* Counts of one byte of the sampled keys' bins, in four tables taken in turn (a sample's bins mostly
 * share their high byte: increments of one counter in a row would wait on each other), for the keys
 * whose bin's high byte is `high` (or any when high > 255). Returns how many were counted. */
static uint64_t count_byte(const mm_selector *s, const uint32_t *keys, size_t m, uint32_t high, uint32_t c[4][256])
{
    /* a key's bin in the pass as the feeds make it: pass 1 the high 16 bits, pass 2 the low 16 bits of
     * the keys in the bucket (the others are not counted); in locals, as c could alias s */
    const uint32_t flip = s->largest ? 0xFFFFFFFFu : 0, first = s->passes == 0, bucket = s->bucket;
    const unsigned to_bin = first ? 16 : 0, shift = high > 255 ? 8 : 0;
    uint64_t counted = 0;
    memset(c, 0, 4 * sizeof c[0]);
    for (size_t i = 0; i < m; i++) {
        const uint32_t sk = keys[i] ^ flip, bin = (sk >> to_bin) & 0xFFFFu;
        if ((first || sk >> 16 == bucket) && (high > 255 || bin >> 8 == high)) {
            c[i & 3][(bin >> shift) & 255u]++;
            counted++;
        }
    }
    return counted;
}

/* The byte at which the rank-th (1-based) of the counts c[.][0..256) lies, and how many lie before it. */
static uint32_t find_byte(uint32_t c[4][256], uint64_t rank, uint64_t *before)
{
    uint64_t acc = 0;
    uint32_t d = 0;
    for (; d < 255; d++) {
        const uint64_t here = (uint64_t)c[0][d] + c[1][d] + c[2][d] + c[3][d];
        if (acc + here >= rank)
            break;
        acc += here;
    }
    *before = acc;
    return d;
}

uint32_t mm_selector_estimate_bin(const mm_selector *s, const uint32_t *keys, size_t m, uint64_t n)
{
    if (s->done || n == 0 || m > UINT32_MAX)
        return MM_SELECT_NO_BIN;
    /* The bin's two bytes one after the other, with 256 counters each: a full 65,536-bin histogram
     * for a sample of a few thousand keys would cost more to clear than to fill. */
    uint32_t c[4][256];
    const uint64_t counted = count_byte(s, keys, m, 256, c);
    if (counted == 0)
        return MM_SELECT_NO_BIN;
    /* the rank sought among all n values (pass 2: among those of the bucket), scaled to the sample */
    const double sought = (double)(s->passes == 0 ? s->k : s->rank);
    uint64_t rank = (uint64_t)(sought * (double)m / (double)n + 0.5);
    rank = rank < 1 ? 1 : rank > counted ? counted : rank;
    uint64_t before, unused;
    const uint32_t h = find_byte(c, rank, &before);
    count_byte(s, keys, m, h, c);
    return h << 8 | find_byte(c, rank - before, &unused);
}

uint32_t mm_selector_bin_step(const mm_selector *s)
{
    if (s->passes == 0)
        return 1;
    /* pass 1 saw the low bits of the bucket's half: below the lowest one that varied, every key of
     * the bucket has the same bits */
    const uint32_t half = s->bucket >> 15, vary = (s->low_or[half] ^ s->low_and[half]) & 0xFFFFu;
    return vary ? vary & (0u - vary) : 1;
}

uint32_t mm_selector_threshold_bin(const mm_selector *s)
{
    /* thr is bucket << 16 | low: pass 1 decided the bucket (its low bits were all the same), pass 2 the
     * low bits inside it */
    return s->passes == 0 ? s->thr >> 16 : s->thr & 0xFFFFu;
}

uint32_t mm_selector_threshold_key(const mm_selector *s)
{
    return s->largest ? ~s->thr : s->thr;
}

float mm_selector_threshold(const mm_selector *s)
{
    uint32_t key = mm_selector_threshold_key(s);
    if (key == MM_SELECT_KEY_NAN)
        return NAN;
    union { uint32_t u; float f; } v = {.u = (key & 0x80000000u) ? key & 0x7fffffffu : ~key};
    return v.f;
}

uint64_t mm_selector_ties_kept(const mm_selector *s)
{
    return s->ties_kept;
}

uint64_t mm_selector_ties_total(const mm_selector *s)
{
    return s->ties_total;
}

void mm_rule_begin(mm_rule_builder *b, uint32_t thr, int above, uint64_t keep_equal, uint64_t total_equal)
{
    b->rule.thr = thr;
    b->rule.above = above != 0;
    if (keep_equal >= total_equal) {
        b->rule.cut = UINT64_MAX;
        b->left = 0;
    } else {
        b->rule.cut = 0;
        b->left = keep_equal;
    }
}

MM_VECTOR_LOOP uint64_t mm_select_count(const uint32_t *keys, size_t n, uint32_t key)
{
    uint64_t equal = 0;
    for (size_t i = 0; i < n; i++)
        equal += keys[i] == key;
    return equal;
}

void mm_rule_feed_block(mm_rule_builder *b, const uint32_t *keys, size_t n, uint64_t index0)
{
    if (b->left == 0 || n == 0)
        return;
    const uint32_t thr = b->rule.thr;
    const uint64_t equal = mm_select_count(keys, n, thr);
    if (equal < b->left) {
        b->left -= equal;
        b->rule.cut = index0 + n; /* every equal element so far is inside */
        return;
    }
    for (size_t i = 0; b->left > 0; i++)
        if (keys[i] == thr && --b->left == 0)
            b->rule.cut = index0 + i + 1;
}

mm_select_rule mm_rule_all(void)
{
    /* No key is above 0xFFFFFFFF (NaN maps to MM_SELECT_KEY_NAN), so "below it" holds for all. */
    return (mm_select_rule){.thr = 0xFFFFFFFFu, .above = 0, .cut = UINT64_MAX};
}

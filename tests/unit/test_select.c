/* merge/select: exact selection by bit-pattern histograms, checked against a sorted copy (D5). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "formats/numeric.h"
#include "merge/methods/select.h"
#include "base/util.h"

/* A small deterministic generator (the test must not depend on the platform's rand()). */
static uint64_t rng_state = 88172645463325252ull;
static uint64_t next_u64(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static double next_unit(void)
{
    return (double)(next_u64() >> 11) * 0x1p-53;
}
static float next_normal(void)
{
    double u = next_unit() + 1e-300, v = next_unit();
    return (float)(sqrt(-2 * log(u)) * cos(6.283185307179586 * v));
}

/* The order the selector promises, written independently of the key trick: NaN above everything,
 * -0 equal to +0. */
static int cmp_value(float a, float b)
{
    if (isnan(a) || isnan(b))
        return isnan(a) - isnan(b);
    return (a > b) - (a < b);
}
static int cmp_desc(const void *pa, const void *pb)
{
    return -cmp_value(*(const float *)pa, *(const float *)pb);
}

typedef struct result {
    float thr;
    uint64_t ties_kept, ties_total;
    int passes;
} result;

/* Runs a selector, feeding each pass in chunks whose sizes cycle through `chunks`. */
static result run(const float *v, size_t n, uint64_t k, int largest, const size_t *chunks, size_t nchunks)
{
    result r = {0};
    mm_selector *s = mm_selector_new(k, largest);
    CHECK(s != NULL);
    while (mm_selector_pass_needed(s)) {
        size_t c = 0;
        for (size_t at = 0; at < n;) {
            size_t m = chunks[c++ % nchunks];
            m = m < n - at ? m : n - at;
            mm_selector_feed(s, v + at, m);
            at += m;
        }
        mm_selector_end_pass(s);
        r.passes++;
    }
    r.thr = mm_selector_threshold(s);
    r.ties_kept = mm_selector_ties_kept(s);
    r.ties_total = mm_selector_ties_total(s);
    CHECK(mm_selector_threshold_key(s) == mm_select_key(r.thr));
    mm_selector_free(s);
    return r;
}

/* The same with each pass shared as threads share it: the chunks go, from the last one backwards, in
 * turn to the selector itself and to two forks; one fork is merged halfway and fed again, both at the
 * end. Counting is exact, so the result must be run()'s whatever the split and the order. */
static result run_forked(const float *v, size_t n, uint64_t k, int largest, const size_t *chunks, size_t nchunks)
{
    result r = {0};
    mm_selector *s = mm_selector_new(k, largest);
    CHECK(s != NULL);
    while (mm_selector_pass_needed(s)) {
        mm_selector *f[2] = {mm_selector_fork(s), mm_selector_fork(s)};
        CHECK(f[0] && f[1] && mm_selector_pass_needed(f[0]));
        mm_selector *to[3] = {s, f[0], f[1]};
        size_t c = 0, turn = 0;
        for (size_t end = n; end > 0; turn++) {
            size_t m = chunks[c++ % nchunks];
            m = m < end ? m : end;
            end -= m;
            mm_selector_feed(to[turn % 3], v + end, m);
            if (end <= n / 2 && end + m > n / 2)
                mm_selector_merge(s, f[0]);
        }
        mm_selector_merge(s, f[0]);
        mm_selector_merge(s, f[1]);
        mm_selector_free(f[0]);
        mm_selector_free(f[1]);
        mm_selector_end_pass(s);
        r.passes++;
    }
    r.thr = mm_selector_threshold(s);
    r.ties_kept = mm_selector_ties_kept(s);
    r.ties_total = mm_selector_ties_total(s);
    mm_selector_free(s);
    return r;
}

static int same_value(float a, float b)
{
    return cmp_value(a, b) == 0;
}

/* The selection is exactly the k largest (smallest) with ties by lower index, and the rule built
 * from it in one ordered pass reproduces it for elements looked at one by one. */
static int check_one(const float *v, size_t n, uint64_t k, int largest, const size_t *chunks, size_t nchunks,
                     int max_passes)
{
    float *sorted = malloc(n * sizeof *sorted);
    memcpy(sorted, v, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, cmp_desc);
    const float want = largest ? sorted[k - 1] : sorted[n - k];
    free(sorted);
    uint64_t beyond = 0, equal = 0;
    for (size_t i = 0; i < n; i++) {
        int c = cmp_value(v[i], want);
        equal += c == 0;
        beyond += largest ? c > 0 : c < 0;
    }
    result r = run(v, n, k, largest, chunks, nchunks);
    int ok = same_value(r.thr, want) && r.ties_kept == k - beyond && r.ties_total == equal && r.passes >= 1 &&
             r.passes <= max_passes;
    const result rf = run_forked(v, n, k, largest, chunks, nchunks);
    ok &= mm_select_key(rf.thr) == mm_select_key(r.thr) && rf.ties_kept == r.ties_kept &&
          rf.ties_total == r.ties_total && rf.passes == r.passes;

    /* Membership: first through the builder (one ordered pass), then with the finished rule. */
    mm_rule_builder b;
    mm_rule_begin(&b, mm_select_key(r.thr), largest, r.ties_kept, r.ties_total);
    uint64_t inside = 0, equal_seen = 0;
    int members_ok = 1;
    for (size_t i = 0; i < n; i++) {
        const uint32_t key = mm_select_key(v[i]);
        const int c = cmp_value(v[i], want);
        const int expect = (largest ? c > 0 : c < 0) || (c == 0 && equal_seen++ < r.ties_kept);
        const int got = mm_rule_feed(&b, key, i);
        members_ok &= got == expect;
        inside += got;
    }
    for (size_t i = 0; i < n; i++) {
        const int again = mm_select_in(&b.rule, mm_select_key(v[i]), i);
        mm_rule_builder b2 = b; /* the finished builder answers like the rule */
        members_ok &= again == mm_rule_feed(&b2, mm_select_key(v[i]), i);
    }
    /* The same cut found block by block (uneven blocks): the finished rule gives the same members. */
    uint32_t *keys = malloc(n * sizeof *keys);
    for (size_t i = 0; i < n; i++)
        keys[i] = mm_select_key(v[i]);
    mm_rule_builder bb;
    mm_rule_begin(&bb, mm_select_key(r.thr), largest, r.ties_kept, r.ties_total);
    size_t c = 0;
    for (size_t at = 0; at < n;) {
        size_t m = chunks[c++ % nchunks];
        m = m < n - at ? m : n - at;
        mm_rule_feed_block(&bb, keys + at, m, at);
        at += m;
    }
    uint64_t inside_block = 0;
    for (size_t i = 0; i < n; i++) {
        const int got = mm_select_in(&bb.rule, keys[i], i);
        members_ok &= got == mm_select_in(&b.rule, keys[i], i);
        inside_block += got;
    }
    members_ok &= mm_select_count(keys, n, mm_select_key(r.thr)) == r.ties_total;
    free(keys);
    ok &= members_ok && inside == k && inside_block == k && mm_rule_done(&b) && mm_rule_done(&bb);
    if (!ok)
        fprintf(stderr, "n=%zu k=%llu largest=%d: thr %g (want %g) ties %llu/%llu (want %llu/%llu) passes %d "
                        "members %d inside %llu\n",
                n, (unsigned long long)k, largest, r.thr, want, (unsigned long long)r.ties_kept,
                (unsigned long long)r.ties_total, (unsigned long long)(k - beyond), (unsigned long long)equal,
                r.passes, members_ok, (unsigned long long)inside);
    return ok;
}

/* Counting by parts: with every value as the sample, the guessed bin is the threshold's bin in the last
 * pass, every counted bin of a pass lies a whole number of steps from the guess, and the guessed bin's
 * count read before and after each part gives the part's threshold-equal values. */
static int check_parts(const float *v, size_t n, uint64_t k, int largest)
{
    enum { PART = 1500 };
    const size_t nparts = (n + PART - 1) / PART;
    uint64_t *part_equal = calloc(nparts, sizeof *part_equal);
    uint32_t *keys = malloc(n * sizeof *keys);
    for (size_t i = 0; i < n; i++)
        keys[i] = mm_select_key(v[i]);
    mm_selector *s = mm_selector_new(k, largest);
    int ok = s && part_equal && keys, pass = 0;
    uint32_t guess = 0;
    while (ok && mm_selector_pass_needed(s)) {
        ok &= mm_selector_pass(s) == pass;
        guess = mm_selector_estimate_bin(s, keys, n, n);
        const uint32_t step = mm_selector_bin_step(s);
        ok &= guess != MM_SELECT_NO_BIN && step >= 1 && (pass == 0 ? step == 1 : 1);
        uint64_t last = 0;
        for (size_t j = 0; j < nparts && ok; j++) {
            const size_t at = j * PART, m = n - at < PART ? n - at : PART;
            mm_selector_feed_keys(s, keys + at, m);
            const uint64_t now = mm_selector_bin_count(s, guess);
            part_equal[j] = now - last;
            last = now;
        }
        for (uint32_t b = 0; b < 65536 && ok; b++)
            ok &= mm_selector_bin_count(s, b) == 0 || (b > guess ? b - guess : guess - b) % step == 0;
        mm_selector_end_pass(s);
        pass++;
    }
    if (ok) {
        const uint32_t thr = mm_selector_threshold_key(s);
        ok &= mm_selector_pass(s) == pass - 1 && mm_selector_threshold_bin(s) == guess;
        uint64_t total = 0;
        for (size_t j = 0; j < nparts; j++) {
            const size_t at = j * PART, m = n - at < PART ? n - at : PART;
            ok &= part_equal[j] == mm_select_count(keys + at, m, thr);
            total += part_equal[j];
        }
        ok &= total == mm_selector_ties_total(s);
    }
    if (!ok)
        fprintf(stderr, "parts: n=%zu k=%llu largest=%d: guess %u, pass %d\n", n, (unsigned long long)k, largest,
                guess, pass);
    mm_selector_free(s);
    free(keys);
    free(part_equal);
    return ok;
}

/* k = 1, N, the middle and a few random ranks, both directions, two chunkings. */
static void check_all_k(const float *v, size_t n, int max_passes)
{
    static const size_t whole[] = {1u << 30}, uneven[] = {1, 7, 1000, 3, 4096, 13};
    uint64_t ks[7] = {1, n, (n + 1) / 2, 2, n - 1};
    for (int j = 5; j < 7; j++)
        ks[j] = 1 + next_u64() % n;
    for (int largest = 0; largest < 2; largest++)
        for (int j = 0; j < 7; j++) {
            uint64_t k = ks[j] < 1 ? 1 : ks[j] > n ? n : ks[j];
            CHECK(check_one(v, n, k, largest, whole, 1, max_passes));
            CHECK(check_one(v, n, k, largest, uneven, MM_COUNT(uneven), max_passes));
            CHECK(check_parts(v, n, k, largest));
        }
}

int main(void)
{
    enum { N = 20000 };
    float *v = malloc(N * sizeof *v);

    /* Keys: order-preserving, -0 == +0, every NaN one key above +inf. */
    CHECK(mm_select_key(-0.0f) == mm_select_key(0.0f));
    CHECK(mm_select_key(-1.0f) < mm_select_key(-0.5f));
    CHECK(mm_select_key(-0.5f) < mm_select_key(0.0f));
    CHECK(mm_select_key(0.0f) < mm_select_key(0x1p-149f));
    CHECK(mm_select_key(3.0f) < mm_select_key(INFINITY));
    CHECK(mm_select_key(INFINITY) < mm_select_key(NAN));
    CHECK(mm_select_key(-NAN) == mm_select_key(NAN));
    CHECK(mm_select_key(-INFINITY) < mm_select_key(-3.0f));

    /* The pre-passes' shortcut: the key of |round_bf16(t)| for every bf16 high half, with low halves
     * that round down, to even, up, and carry into the exponent (up to +inf), NaN payloads included. */
    {
        static const uint32_t lows[] = {0x0000, 0x0001, 0x7fff, 0x8000, 0x8001, 0xffff};
        int same = 1;
        for (uint32_t h = 0; h < 0x10000u; h++)
            for (size_t j = 0; j <= MM_COUNT(lows); j++) {
                const uint32_t u = h << 16 | (j < MM_COUNT(lows) ? lows[j] : (uint32_t)next_u64() & 0xffffu);
                float t;
                memcpy(&t, &u, sizeof t);
                same &= mm_select_key_abs_bf16(t) == mm_select_key(fabsf(mm_round_to(MM_DT_BF16, t)));
            }
        CHECK(same);
    }

    /* float32 values, almost no duplicates: two passes at most. */
    for (size_t i = 0; i < N; i++)
        v[i] = next_normal();
    check_all_k(v, N, 2);

    /* bf16 values (the low 16 bits are zero): thousands of ties, one pass. */
    for (size_t i = 0; i < N; i++)
        v[i] = mm_round_to(MM_DT_BF16, next_normal() * 0.02f);
    check_all_k(v, N, 1);

    /* Magnitudes of bf16 values, as ties/breadcrumbs select them. */
    for (size_t i = 0; i < N; i++)
        v[i] = fabsf(v[i]);
    check_all_k(v, N, 1);

    /* Duplicate-heavy with both zeros, infinities and NaNs of both signs. */
    static const float pool[] = {0.0f, -0.0f, 1.0f, -1.0f, 0.5f, 2.0f, INFINITY, -INFINITY, NAN, -NAN, 1.0f, 1.0f};
    for (size_t i = 0; i < N; i++)
        v[i] = pool[next_u64() % (MM_COUNT(pool))];
    check_all_k(v, N, 1);

    /* float16 values as float32: the low 16 bits of their keys vary in 3 bits, so pass 2 decides, and
     * its bins lie 8192 apart. */
    for (size_t i = 0; i < N; i++)
        v[i] = mm_round_to(MM_DT_F16, next_normal());
    check_all_k(v, N, 2);
    {
        mm_selector *s = mm_selector_new(N / 3, 1);
        CHECK(s != NULL);
        mm_selector_feed(s, v, N);
        mm_selector_end_pass(s);
        CHECK(mm_selector_pass_needed(s) && mm_selector_pass(s) == 1 && mm_selector_bin_step(s) == 8192);
        mm_selector_free(s);
    }

    /* float32 values sharing their high 16 bits (one bucket): pass 2 decides. */
    for (size_t i = 0; i < N; i++)
        v[i] = 1.0f + (float)(next_u64() % 64) * 0x1p-23f;
    check_all_k(v, N, 2);

    /* All equal: the threshold is that value; the first k are kept. */
    for (size_t i = 0; i < N; i++)
        v[i] = -0.0f;
    check_all_k(v, N, 1);
    {
        static const size_t one[] = {1};
        result r = run(v, N, 5, 1, one, 1);
        CHECK(r.thr == 0.0f && r.ties_kept == 5 && r.ties_total == N && r.passes == 1);
    }

    /* NaN is the largest: with 3 NaNs, the 3 largest are exactly them; the 4th is the next value. */
    for (size_t i = 0; i < 10; i++)
        v[i] = (float)i;
    v[2] = NAN;
    v[5] = -NAN;
    v[9] = NAN;
    {
        static const size_t whole[] = {10};
        result r = run(v, 10, 3, 1, whole, 1);
        CHECK(isnan(r.thr) && r.ties_kept == 3 && r.ties_total == 3);
        r = run(v, 10, 4, 1, whole, 1);
        CHECK(r.thr == 8.0f && r.ties_kept == 1 && r.ties_total == 1);
        r = run(v, 10, 1, 0, whole, 1); /* smallest: NaN is never the smallest */
        CHECK(r.thr == 0.0f);
    }

    /* A fork's low bits count: the selector alone sees one low-bit pattern that is also the OR of the
     * fork's two (as searched keys, complemented for "largest"), so only the fork's AND shows that
     * they differ and pass 2 must find the 2nd largest, 1 + 1 ulp. */
    {
        const float a = 1.0f, bc[2] = {1.0f + 0x1p-23f, 1.0f + 0x2p-23f};
        mm_selector *s = mm_selector_new(2, 1), *f = mm_selector_fork(s);
        CHECK(s && f);
        int passes = 0;
        while (mm_selector_pass_needed(s)) {
            mm_selector_feed(s, &a, 1);
            mm_selector_feed(f, bc, 2);
            mm_selector_merge(s, f);
            mm_selector_end_pass(s);
            mm_selector_free(f);
            f = mm_selector_fork(s);
            CHECK(f != NULL);
            passes++;
        }
        CHECK(passes == 2 && mm_selector_threshold(s) == bc[0] && mm_selector_ties_total(s) == 1);
        mm_selector_free(f);
        mm_selector_free(s);
    }

    /* Tiny inputs: N = 1 and N = 2. */
    v[0] = 0.25f;
    v[1] = 0.25f;
    check_all_k(v, 1, 1);
    check_all_k(v, 2, 1);

    /* A rule with everything inside, and builders whose cut is known at once. */
    mm_select_rule all = mm_rule_all();
    CHECK(mm_select_in(&all, mm_select_key(NAN), 0) && mm_select_in(&all, mm_select_key(-INFINITY), 7));
    mm_rule_builder b;
    mm_rule_begin(&b, mm_select_key(1.0f), 1, 0, 4);
    CHECK(mm_rule_done(&b) && !mm_select_in(&b.rule, mm_select_key(1.0f), 0) &&
          mm_select_in(&b.rule, mm_select_key(2.0f), 0));
    mm_rule_begin(&b, mm_select_key(1.0f), 0, 4, 4);
    CHECK(mm_rule_done(&b) && mm_select_in(&b.rule, mm_select_key(1.0f), 1000) &&
          !mm_select_in(&b.rule, mm_select_key(2.0f), 0) && mm_select_in(&b.rule, mm_select_key(-2.0f), 0));

    free(v);
    return mm_check_report();
}

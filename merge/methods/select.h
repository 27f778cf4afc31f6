/* Exact selection over streamed values (D5, D7): the k-th largest (or smallest) value of N float32
 * values and how many of the elements equal to it fall inside the selection, found by histograms of
 * the values' bit patterns in repeated streaming passes (16 high bits, then 16 low bits within the
 * one high bucket that holds the k-th value), never by sorting a copy. Memory: about 1 MiB per
 * selector (a 65,536-bin histogram and two 32-bit counting tables), whatever N.
 *
 * Usage (one selector per quantity; values fed in flat index order each pass):
 *     mm_selector *s = mm_selector_new(k, 1);
 *     while (mm_selector_pass_needed(s)) {
 *         ...stream over the tensor, calling mm_selector_feed(s, values, n) for each chunk...
 *         mm_selector_end_pass(s);
 *     }
 *     float thr = mm_selector_threshold(s); uint64_t keep_equal = mm_selector_ties_kept(s);
 * Elements are then kept when they are beyond thr (greater for largest, smaller for smallest), or equal
 * to thr and among the first keep_equal such elements in flat index order (lower index first).
 * NaN values sort above +inf. -0.0 and +0.0 are different bit patterns but equal values; they are
 * treated as equal (both map to +0.0).
 *
 * Thread-safety: a selector is used by one thread at a time (see mm_selector_fork for sharing a pass). */
#ifndef MM_SELECT_H
#define MM_SELECT_H

#include <stddef.h>
#include <stdint.h>

typedef struct mm_selector mm_selector;

/* k in [1, N]; largest = 1 selects the k largest, 0 the k smallest. NULL on allocation failure. */
mm_selector *mm_selector_new(uint64_t k, int largest);
void mm_selector_free(mm_selector *s);

/* 1 while another pass over all values is needed (at most 2 passes). */
int mm_selector_pass_needed(const mm_selector *s);
void mm_selector_feed(mm_selector *s, const float *values, size_t n);
/* The same with the values given as their keys (mm_select_key), for callers that compute keys in a
 * loop of their own. */
void mm_selector_feed_keys(mm_selector *s, const uint32_t *keys, size_t n);
void mm_selector_end_pass(mm_selector *s);

/* Sharing a pass between threads: each feeds a part of the values (any split, any order) to a fork
 * of s, and the forks are merged into s; then mm_selector_end_pass(s).
 * (s itself may be fed a part too). Counting is exact, so the result is the one of feeding s
 * everything. A fork is an empty selector in s's pass (NULL on allocation failure), freed with
 * mm_selector_free; merging empties it, so it can be fed again in the same pass. */
mm_selector *mm_selector_fork(const mm_selector *s);
void mm_selector_merge(mm_selector *s, mm_selector *part);

/* After the passes: the k-th value, and how many elements equal to it are inside the selection
 * (1 <= ties_kept <= number of elements equal to the threshold). */
float mm_selector_threshold(const mm_selector *s);
uint64_t mm_selector_ties_kept(const mm_selector *s);

/* Order-preserving key of a float (the order mm_selector uses). */
uint32_t mm_select_key(float x);

/* The same key, inlined for per-element loops: NaN (any sign or payload) maps to one key above +inf,
 * -0.0 to the key of +0.0, negative values to keys below every non-negative value. */
#define MM_SELECT_KEY_NAN 0xFFFF0000u
static inline uint32_t mm_select_key_inline(float x)
{
    /* Selects instead of branches, so that loops over arrays vectorise. */
    union { float f; uint32_t u; } v = {.f = x};
    const uint32_t mag = v.u & 0x7fffffffu;
    uint32_t key = (v.u >> 31) ? ~v.u : (v.u | 0x80000000u);
    key = mag == 0 ? 0x80000000u : key;
    return mag > 0x7f800000u ? MM_SELECT_KEY_NAN : key;
}

/* mm_select_key_inline(|round_bf16(t)|) in half the operations, for the magnitude pre-passes' per-element
 * loop: round to nearest even is symmetric, so rounding |t| gives |round(t)|, and the key of a
 * non-negative value (0 included) is its bit pattern with the top bit set. NaN keeps its key. The
 * rounding is mm_round_bf16's, written out: its NaN select is then made once, on |t| (built on
 * mm_round_bf16, a ties build took 2-4% more CPU). */
static inline uint32_t mm_select_key_abs_bf16(float t)
{
    union { float f; uint32_t u; } v = {.f = t};
    const uint32_t u = v.u & 0x7fffffffu;
    const uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u; /* <= +inf for u <= +inf */
    return u > 0x7f800000u ? MM_SELECT_KEY_NAN : r | 0x80000000u;
}

/* After the passes, also: the key of the threshold, and how many of the N values equal it. */
uint32_t mm_selector_threshold_key(const mm_selector *s);
uint64_t mm_selector_ties_total(const mm_selector *s);

/* ---- Counting by parts within the last pass ----
 * Each pass counts every value fed in one bin of a 65,536-bin histogram: pass 1 by the high 16 bits of
 * its key, pass 2 by the low 16 bits of the keys inside one bucket (the others are not counted). The
 * bin that holds the threshold in the last pass counted exactly the values equal to the threshold. So
 * a caller that reads a bin's count before and after each part of the values learns how many of each
 * part's values equal the threshold, without another pass, provided it read the right bin: it guesses
 * with mm_selector_estimate_bin, reads a window of bins around the guess, and checks afterwards with
 * mm_selector_threshold_bin. */

/* The pass being fed, 0 (first) or 1; once the selection is done, the number of the last pass. */
int mm_selector_pass(const mm_selector *s);
/* How many of the values fed to s itself (a fork counts its own) in the current pass lie in bin b
 * (b < 65536). */
uint64_t mm_selector_bin_count(const mm_selector *s, uint32_t b);
/* A guess of the bin in which the current pass will find the threshold once all n values are fed:
 * the bin of the same rank, scaled, among keys[0..m) (mm_select_key of m of the values, sampled
 * evenly). MM_SELECT_NO_BIN when the sample says nothing (no sampled key is counted by the pass). */
#define MM_SELECT_NO_BIN UINT32_MAX
uint32_t mm_selector_estimate_bin(const mm_selector *s, const uint32_t *keys, size_t m, uint64_t n);
/* The spacing of the bins the current pass can count values in: 1 in pass 1; in pass 2, the step of the
 * low 16 bits the values of pass 1 had (8192 for float16 values: 8 bins per bucket). A window of bins
 * is best a run of such steps around the guess, which is one of them. */
uint32_t mm_selector_bin_step(const mm_selector *s);
/* Once done: the bin that held the threshold in the last pass (its count: mm_selector_ties_total). */
uint32_t mm_selector_threshold_bin(const mm_selector *s);

/* ---- Applying a selection to one element at a time ----
 * A kernel that computes a block of a tensor alone must decide for each element whether it is inside
 * the selection. Values beyond the threshold are; of the values equal to it, the first `keep_equal`
 * in flat index order are (D5). That is a single flat index bound `cut`: an element equal to the
 * threshold is inside iff its index < cut. The cut is found by one more pass in flat index order
 * (mm_rule_feed), which can stop as soon as the last kept equal element has been seen. */
typedef struct mm_select_rule {
    uint32_t thr;   /* key of the threshold */
    uint32_t above; /* 1: keys greater than thr are inside; 0: keys smaller than thr are */
    uint64_t cut;   /* threshold-equal elements are inside iff their flat index < cut */
} mm_select_rule;   /* plain bytes: stored in statistics blobs */

static inline int mm_select_in(const mm_select_rule *r, uint32_t key, uint64_t index)
{
    /* (key > thr) == above is "key < thr" for above = 0 once equality is ruled out; no branches. */
    return key == r->thr ? index < r->cut : (key > r->thr) == r->above;
}

/* A rule under construction: feed every element's key with its flat index, in increasing index order. */
typedef struct mm_rule_builder {
    mm_select_rule rule;
    uint64_t left;  /* threshold-equal elements still to take */
} mm_rule_builder;

/* `keep_equal` of the threshold-equal elements are inside. When keep_equal is 0 or all of them, the
 * cut is known at once and mm_rule_done is already true. */
void mm_rule_begin(mm_rule_builder *b, uint32_t thr, int above, uint64_t keep_equal, uint64_t total_equal);
/* A rule with every element inside, for a band without that bound. */
mm_select_rule mm_rule_all(void);
/* Whether the element is inside; updates the cut. */
static inline int mm_rule_feed(mm_rule_builder *b, uint32_t key, uint64_t index)
{
    if (key != b->rule.thr)
        return b->rule.above ? key > b->rule.thr : key < b->rule.thr;
    if (b->left == 0)
        return index < b->rule.cut;
    b->left--;
    b->rule.cut = index + 1;
    return 1;
}
/* How many of keys[0..n) equal `key` (one vectorised loop). */
uint64_t mm_select_count(const uint32_t *keys, size_t n, uint32_t key);
/* mm_rule_feed for a block of keys (flat indexes index0, index0 + 1, ...) without the answers: one
 * vectorised count of the equal keys, and a scan only in the block where the cut falls. Afterwards
 * b->rule answers correctly for the block and everything before it (the cut may then lie anywhere
 * between the last kept equal element and the end of the block, which is the same selection). */
void mm_rule_feed_block(mm_rule_builder *b, const uint32_t *keys, size_t n, uint64_t index0);
static inline int mm_rule_done(const mm_rule_builder *b)
{
    return b->left == 0;
}

#endif

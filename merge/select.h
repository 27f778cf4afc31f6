/* Exact selection over streamed values (D5, D7): the k-th largest (or smallest) value of N float32
 * values and how many of the elements equal to it fall inside the selection, found by histograms of
 * the values' bit patterns in repeated streaming passes (16 high bits, then 16 low bits within the
 * one high bucket that holds the k-th value), never by sorting a copy. Memory: two 65,536-bin
 * histograms, whatever N.
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
 * Thread-safety: a selector is used by one thread at a time. */
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
void mm_selector_end_pass(mm_selector *s);

/* After the passes: the k-th value, and how many elements equal to it are inside the selection
 * (1 <= ties_kept <= number of elements equal to the threshold). */
float mm_selector_threshold(const mm_selector *s);
uint64_t mm_selector_ties_kept(const mm_selector *s);

/* Order-preserving key of a float (the order mm_selector uses). */
uint32_t mm_select_key(float x);

#endif

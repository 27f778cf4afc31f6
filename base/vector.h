#ifndef MM_VECTOR_H
#define MM_VECTOR_H

/* Runtime CPU dispatch for the whole-array loops (merge arithmetic, dtype conversion): a function marked
 * MM_VECTOR_LOOP is compiled twice, for the baseline x86-64 (SSE2) and for AVX2, and the dynamic loader
 * picks the copy the CPU supports (function multiversioning). The results are bit-identical: both copies
 * do the same IEEE float32 operations in the same order (-ffp-contract=off: no fused multiply-add).
 * Static helpers inlined into a marked function are vectorised with it. Other targets, and clang (whose
 * clones of external functions do not link from a static library in version 14): one portable copy.
 * ThreadSanitizer cannot run the resolvers before its runtime starts: those builds set MM_NO_MULTIVERSION. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(MM_NO_MULTIVERSION)
#define MM_VECTOR_LOOP __attribute__((target_clones("avx2", "default")))
#else
#define MM_VECTOR_LOOP
#endif

/* A static helper whose loops must be inlined into its MM_VECTOR_LOOP caller: only then are they
 * compiled for the caller's target, and specialised by the constant arguments the caller passes. GCC
 * does not inline a helper of several loops by itself. */
#if defined(__GNUC__)
#define MM_INLINE_LOOP static inline __attribute__((always_inline))
#else
#define MM_INLINE_LOOP static inline
#endif

#endif

/* A byte-count progress bar on stderr for long commands (`mergemount build`):
 *
 *   [#########.....................]  1.23 GB / 4.56 GB  512 MB/s  ETA 0:07
 *
 * redrawn in place with '\r' at most ten times a second, and a final line with the total time.
 *
 * Thread-safety: mm_progress_add may be called from any number of threads at once (the count is atomic;
 * a thread that finds another one drawing skips its redraw instead of waiting). mm_progress_new,
 * mm_progress_finish and mm_progress_free must not run concurrently with anything else on the object. */
#ifndef MM_PROGRESS_H
#define MM_PROGRESS_H

#include <stdint.h>

typedef struct mm_progress mm_progress;

/* A bar for `total` bytes. mode: -1 draws only when stderr is a terminal, 0 never draws (the object
 * still counts, so callers need no conditionals), 1 always draws. Never returns NULL. */
mm_progress *mm_progress_new(uint64_t total, int mode);

/* Records `bytes` more done; redraws if the last redraw is at least 100 ms old. */
void mm_progress_add(mm_progress *p, uint64_t bytes);

/* Ends the bar: with completed != 0 draws the final line with the total time, otherwise only ends the
 * current line so a following error message starts on a line of its own. Idempotent. */
void mm_progress_finish(mm_progress *p, int completed);

/* Frees the bar (finishing it as not completed if mm_progress_finish was not called). NULL is a no-op. */
void mm_progress_free(mm_progress *p);

#endif

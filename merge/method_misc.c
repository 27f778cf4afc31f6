/* nearswap (B2.12), ram and ramplus_tl (B2.11), sce (B2.10), arcee_fusion (B2.13). */
#include <errno.h>

#include "method_internal.h"

/* Not implemented yet: their names give "not implemented yet" at mount time. */
const mm_method mm_method_nearswap = {.name = "nearswap"};
const mm_method mm_method_ram = {.name = "ram"};
const mm_method mm_method_ramplus_tl = {.name = "ramplus_tl"};
const mm_method mm_method_sce = {.name = "sce"};
const mm_method mm_method_arcee_fusion = {.name = "arcee_fusion"};

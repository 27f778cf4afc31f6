/* Norm- and Gram-based methods (B2.3-B2.7): slerp, nuslerp, multislerp, karcher, model_stock. */
#include <errno.h>

#include "method_internal.h"

/* Not implemented yet: their names give "not implemented yet" at mount time. */
const mm_method mm_method_slerp = {.name = "slerp"};
const mm_method mm_method_nuslerp = {.name = "nuslerp"};
const mm_method mm_method_multislerp = {.name = "multislerp"};
const mm_method mm_method_karcher = {.name = "karcher"};
const mm_method mm_method_model_stock = {.name = "model_stock"};

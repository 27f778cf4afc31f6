/* The sparsifiers of the task-arithmetic family (B2.9); see method_gta.c. */
#include "method_internal.h"

/* Implemented by the selection work of issue 4 (see select.h). */
#include "select.h"

/* The start and the failure of the test programs that dump a part of the GGUF view for a config
 * (gguf_dump, gguf_arch_dump, gguf_vocab_dump): they see the plan `mergemount build` would make. */
#ifndef MM_PLAN_DUMP_H
#define MM_PLAN_DUMP_H

#include <stdio.h>

#include "config/config.h"
#include "merge/plan/plan.h"

/* Loads the config at path and builds its plan with the default options. 0, or -errno with err set
 * (free what was made with mm_dump_fail). */
static inline int mm_dump_plan(const char *path, mm_config **cfg, mm_plan **plan, mm_err *err)
{
    mm_plan_options po;
    mm_plan_options_default(&po);
    int rc = mm_config_load(path, cfg, err);
    if (rc == 0)
        rc = mm_plan_build(*cfg, &po, plan, err);
    return rc;
}

/* The programs' failure: err's message on stderr, the plan and config freed (the suite runs these under
 * LeakSanitizer, which fails an exit that leaves them), exit status 1. */
static inline int mm_dump_fail(const mm_err *err, mm_config *cfg, mm_plan *plan)
{
    fprintf(stderr, "%s\n", err->msg);
    mm_plan_free(plan);
    mm_config_free(cfg);
    return 1;
}

#endif

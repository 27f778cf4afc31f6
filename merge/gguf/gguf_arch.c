#include "gguf_arch.h"

#include <errno.h>
#include <stdlib.h>

/* PLACEHOLDER until the family tables land (this session). */
int mm_gguf_arch_build(const mm_plan *p, uint32_t ftype, mm_gguf_kvs *kv, mm_gguf_arch *out, mm_err *err)
{
    (void)p, (void)ftype, (void)kv, (void)out;
    return mm_err_set(err, -ENOTSUP, "the GGUF view is not built yet");
}

void mm_gguf_arch_free(mm_gguf_arch *a)
{
    for (size_t i = 0; i < a->ntensors; i++) {
        free(a->tensors[i].name);
        free(a->tensors[i].gen);
    }
    free(a->tensors);
    free(a->arch);
}

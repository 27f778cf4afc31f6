#include "gguf_vocab.h"

#include <errno.h>

/* PLACEHOLDER until the tokenizer keys land (this session). */
int mm_gguf_vocab_build(const mm_plan *p, const char *arch, mm_gguf_kvs *kv, mm_err *err)
{
    (void)p, (void)arch, (void)kv;
    return mm_err_set(err, -ENOTSUP, "the GGUF view is not built yet");
}

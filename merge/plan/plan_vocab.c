/* The tokenizer side of the plan (D19): the output vocabulary when the config has a tokenizer option,
 * and the chat template the chat_template option chooses. Both are decided before any tensor is
 * planned, because the embeddings' shapes follow the vocabulary. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "merge/plan/chat.h"
#include "merge/plan/config_out.h"
#include "merge/plan/vocab.h"
#include "plan_internal.h"

static int build_vocab(mm_plan *p, mm_err *err)
{
    const mm_config *cfg = p->cfg;
    mm_vocab_model *models = mm_xcalloc(p->nmodels, sizeof *models);
    for (size_t i = 0; i < p->nmodels; i++)
        models[i] = (mm_vocab_model){p->model_refs[i], p->models[i]->path, mm_config_vocab_size(p->models[i]->config)};
    const char **tokens = mm_xcalloc(cfg->ntokens ? cfg->ntokens : 1, sizeof *tokens);
    for (size_t i = 0; i < cfg->ntokens; i++)
        tokens[i] = cfg->tokens[i].token;
    mm_vocab_spec spec = {.source = cfg->tokenizer_source == MM_TOK_BASE    ? MM_VOCAB_BASE
                                    : cfg->tokenizer_source == MM_TOK_UNION ? MM_VOCAB_UNION
                                                                            : MM_VOCAB_MODEL,
                          .source_model = -1, .tokens = tokens, .ntokens = cfg->ntokens};
    if (spec.source == MM_VOCAB_MODEL) {
        spec.source_folder = cfg->tokenizer_model->path;
        spec.source_ref = cfg->tokenizer_model->ref;
        for (size_t i = 0; i < p->nmodels; i++)
            if (mm_model_is(p->models[i], cfg->tokenizer_model->path, cfg->tokenizer_model->lora_path))
                spec.source_model = (int)i;
    }
    int rc = mm_vocab_build(models, p->nmodels, p->donor, &spec, &p->vocab, err);
    if (rc < 0)
        mm_err_prefix(err, "%s:%d:%d", cfg->tokenizer_pos.file, cfg->tokenizer_pos.line, cfg->tokenizer_pos.col);
    free(models);
    free(tokens);
    return rc;
}

/* The chat templates of the models, base first, then the others in config order (mergekit: the
 * referenced models). Tokenizers are read for it only when the vocabulary did not read them already. */
static int choose_chat(mm_plan *p, mm_err *err)
{
    const mm_config *cfg = p->cfg;
    const char **templates = mm_xcalloc(p->nmodels, sizeof *templates);
    mm_tokenizer **loaded = mm_xcalloc(p->nmodels, sizeof *loaded);
    size_t n = 0;
    int rc = 0;
    for (size_t k = 0; k < p->nmodels && rc == 0; k++) {
        size_t i = k == 0 ? p->donor : k <= p->donor ? k - 1 : k;
        const mm_tokenizer *t = p->vocab ? p->vocab->tok[i] : NULL;
        if (!t && !p->vocab && strcmp(cfg->chat_template, "auto") == 0) {
            mm_err e2 = {0};
            /* A model without a tokenizer simply has no template to vote with. */
            if (mm_tokenizer_load(p->models[i]->path, &loaded[i], &e2) == 0)
                t = loaded[i];
        }
        templates[n++] = t ? t->chat_template : NULL;
    }
    char pos[512];
    mm_srcpos_format(&cfg->chat_template_pos, pos, sizeof pos);
    rc = mm_chat_choose(cfg->chat_template, templates, n, pos, &p->chat_template, err);
    for (size_t i = 0; i < p->nmodels; i++)
        mm_tokenizer_free(loaded[i]);
    free(loaded);
    free(templates);
    return rc;
}

int mm_plan_tokenizer_setup(mm_plan *p, mm_err *err)
{
    int rc = 0;
    if (p->cfg->tokenizer_source != MM_TOK_DONOR)
        rc = build_vocab(p, err);
    if (rc == 0 && p->cfg->chat_template)
        rc = choose_chat(p, err);
    return rc;
}

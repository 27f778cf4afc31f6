/* README.md model card (D16): YAML front matter for the Hub, then what was merged and how. */
#include <stdlib.h>
#include <string.h>

#include "plan_internal.h"

/* A reference that names a Hub repository: "org/name" (optionally "@rev") that is not a local path,
 * or a local folder inside a Hugging Face cache snapshot. Returns the repo id (heap) or NULL. */
static char *hub_id(const char *ref, const char *path)
{
    const char *m = strstr(path, "/models--");
    const char *snap = m ? strstr(m, "/snapshots/") : NULL;
    if (snap) {
        /* models--org--name: "--" separates org and name. */
        const char *s = m + 9;
        const char *sep = strstr(s, "--");
        if (sep && sep < snap)
            return mm_xasprintf("%.*s/%.*s", (int)(sep - s), s, (int)(snap - sep - 2), sep + 2);
    }
    if (ref[0] == '.' || ref[0] == '/' || ref[0] == '~')
        return NULL;
    const char *slash = strchr(ref, '/');
    if (!slash || strchr(slash + 1, '/'))
        return NULL;
    size_t n = strcspn(ref, "@");
    return mm_xstrndup(ref, n);
}

static const struct {
    const char *method, *title, *paper;
} method_info[] = {
    {"linear", "Linear", "https://arxiv.org/abs/2203.05482"},
    {"task_arithmetic", "Task Arithmetic", "https://arxiv.org/abs/2212.04089"},
    {"passthrough", "Passthrough", NULL},
};

char *mm_card_text(const mm_plan *p)
{
    const mm_config *cfg = p->cfg;
    mm_buf b = {0};
    mm_buf_puts(&b, "---\n");
    int any = 0;
    for (size_t i = 0; i < p->nmodels; i++) {
        char *id = hub_id(p->model_refs[i], p->models[i]->path);
        if (!id)
            continue;
        mm_buf_printf(&b, "%s- %s\n", any ? "" : "base_model:\n", id);
        any = 1;
        free(id);
    }
    mm_buf_puts(&b, "library_name: transformers\ntags:\n- mergekit\n- merge\n- mergemount\n---\n");
    mm_buf_puts(&b, "# Merged model\n\nThis is a merge of pre-trained language models, computed on read by "
                    "mergemount from a mergekit configuration.\n\n## Merge Details\n### Merge Method\n\n");
    const char *title = cfg->moe ? "Mixture of experts (mergekit-moe)" : cfg->merge_method, *paper = NULL;
    for (size_t i = 0; i < MM_COUNT(method_info) && !cfg->moe; i++)
        if (strcmp(method_info[i].method, cfg->merge_method) == 0) {
            title = method_info[i].title;
            paper = method_info[i].paper;
        }
    if (paper)
        mm_buf_printf(&b, "This model was merged using the [%s](%s) merge method", title, paper);
    else
        mm_buf_printf(&b, "This model was merged using the %s merge method", title);
    if (cfg->base_model)
        mm_buf_printf(&b, " using %s as a base", cfg->base_model->ref);
    mm_buf_puts(&b, ".\n\n### Models Merged\n\nThe following models were included in the merge:\n");
    for (size_t i = 0; i < p->nmodels; i++)
        if (!cfg->base_model || strcmp(p->models[i]->path, cfg->base_model->path) != 0)
            mm_buf_printf(&b, "* %s\n", p->model_refs[i]);
    mm_buf_puts(&b, "\n### Configuration\n\nThe following YAML configuration was used to produce this model:\n\n"
                    "```yaml\n");
    mm_buf_append(&b, cfg->text, cfg->text_len);
    if (cfg->text_len && cfg->text[cfg->text_len - 1] != '\n')
        mm_buf_puts(&b, "\n");
    mm_buf_puts(&b, "```\n");
    return b.data;
}

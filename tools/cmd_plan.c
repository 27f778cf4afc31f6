/* `mergemount plan CONFIG [--json]`: what a mount or build would produce, computing nothing (with --gguf,
 * the GGUF file's tensors too). */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>

#include "merge/gguf/gguf_plan.h"
#include "merge/moe/forward.h"
#include "tools/cli.h"
#include "tools/commands.h"

static const char usage_plan[] = "usage: mergemount plan CONFIG [--json] [merge options]\n"
                                 "\n"
                                 "  --json                    machine-readable output\n";

int mm_cmd_plan(int argc, char **argv)
{
    static const struct option lo[] = {{"json", no_argument, 0, MM_OPT_JSON}, MM_CLI_COMMON_LONGOPTS, {0, 0, 0, 0}};
    mm_plan_options po;
    mm_plan_options_default(&po);
    mm_forward_plug(&po); /* the hidden gate modes of mergekit-moe configs */
    int json = 0;
    char *pos[1];
    int rc = mm_cli_parse(argc, argv, "vh", lo, usage_plan, mm_cli_json_extra, &json, &po, NULL, pos, 1);
    if (rc)
        return rc;
    mm_config *cfg = NULL;
    mm_plan *plan = NULL;
    if (mm_cli_load(pos[0], &po, &cfg, &plan, NULL))
        return 1;
    mm_gguf_file *g = NULL;
    mm_err err = {{0}};
    if (po.gguf && mm_gguf_plan(plan, (mm_gguf_outtype)po.gguf, NULL, &g, &err) < 0) {
        fprintf(stderr, "mergemount: error: %s\n", err.msg);
        mm_cli_unload(cfg, plan, NULL);
        return 1;
    }
    if (json) {
        cJSON *root = mm_plan_json(plan);
        if (g)
            cJSON_AddItemToObject(root, "gguf", mm_gguf_json(g, plan));
        char *text = cJSON_Print(root);
        printf("%s\n", text);
        cJSON_free(text);
        cJSON_Delete(root);
    } else {
        if (po.gguf_only)
            printf("(--gguf-only: only the GGUF file below is served; the safetensors view is what it is made "
                   "from)\n");
        mm_plan_print(plan, stdout, 0);
        if (g)
            mm_gguf_print(g, plan, stdout);
    }
    mm_gguf_file_free(g);
    mm_cli_unload(cfg, plan, NULL);
    return 0;
}

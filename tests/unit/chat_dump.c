/* A test-only program (not installed): prints a built-in chat template (merge/plan/chat.c) exactly as
 * it is, for tests/integration/test_chat_templates.py to render with Jinja.
 *
 *   chat_dump NAME     the template's text on stdout (no newline added); exit 1 for an unknown NAME */
#include <stdio.h>
#include <string.h>

#include "merge/plan/chat.h"

int main(int argc, char **argv)
{
    const char *t = argc == 2 ? mm_chat_builtin(argv[1]) : NULL;
    if (!t) {
        fprintf(stderr, "usage: chat_dump alpaca|chatml|exaone|llama3|mistral\n");
        return 1;
    }
    return fwrite(t, 1, strlen(t), stdout) == strlen(t) && fflush(stdout) == 0 ? 0 : 1;
}

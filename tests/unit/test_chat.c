/* merge/plan/chat.c: choosing the chat template (mergekit's _set_chat_template). The built-in
 * templates' renderings are checked with Jinja in tests/integration/test_chat_templates.py. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "merge/plan/chat.h"

#define T_A "{% for m in messages %}A{% endfor %}"
#define T_B "{% for m in messages %}B{% endfor %}"
#define T_C "{% for m in messages %}C{% endfor %}"

/* mm_chat_choose's *out for opt over templates, or "(none)" / "(error)"; the message in *msg. */
static char *choose(const char *opt, const char *const *t, size_t n, mm_err *err)
{
    char *out = (char *)"(unset)";
    int rc = mm_chat_choose(opt, t, n, "merge.yml:7:16", &out, err);
    if (rc == -EINVAL) {
        CHECK(out == NULL);
        return strdup("(error)");
    }
    CHECK(rc == 0);
    return out ? out : strdup("(none)");
}

static void check_choice(const char *opt, const char *const *t, size_t n, const char *want)
{
    mm_err err = {{0}};
    char *got = choose(opt, t, n, &err);
    CHECK_STR_EQ(got, want);
    free(got);
}

static void test_auto(void)
{
    /* the majority, wherever it first appears */
    const char *maj[] = {T_A, T_B, NULL, T_B, T_C};
    check_choice("auto", maj, 5, T_B);
    /* ties go to the first seen (the base comes first in the caller's order) */
    const char *tie[] = {NULL, T_C, T_A, T_A, T_C};
    check_choice("auto", tie, 5, T_C);
    const char *tie2[] = {T_A, T_B, T_C};
    check_choice("auto", tie2, 3, T_A);
    /* none: no template (models without one, empty ones, or no models at all) */
    const char *none[] = {NULL, "", NULL};
    check_choice("auto", none, 3, "(none)");
    check_choice("auto", NULL, 0, "(none)");
    /* compared and served stripped of Python's whitespace: ASCII, \x1c-\x1f, U+00A0, U+3000, U+2029 */
    const char *ws[] = {T_A, "\n  " T_B " \t\n", "\xc2\xa0" T_B "\x1f", "\xe3\x80\x80" T_A "\xe2\x80\xa9\r\n",
                        "\v\f" T_B};
    check_choice("auto", ws, 5, T_B);
    /* not whitespace to strip: U+200B (zero width space) and "é" (U+00E9) */
    const char *nows[] = {"\xe2\x80\x8b" T_A "\xc3\xa9"};
    check_choice("auto", nows, 1, "\xe2\x80\x8b" T_A "\xc3\xa9");
    /* a whitespace-only template is not empty before stripping: it counts, as "" */
    const char *blank[] = {"  \n", " ", T_A};
    check_choice("auto", blank, 3, "");
}

static void test_builtins(void)
{
    static const char *const names[] = {"alpaca", "chatml", "exaone", "llama3", "mistral"};
    const char *t[] = {T_A};
    for (size_t i = 0; i < MM_COUNT(names); i++) {
        const char *b = mm_chat_builtin(names[i]);
        CHECK(b != NULL && strlen(b) >= 20 && strchr(b, '{'));
        check_choice(names[i], t, 1, b ? b : "?");
    }
    CHECK(mm_chat_builtin("ChatML") == NULL);
    CHECK(mm_chat_builtin("llama") == NULL);
    CHECK(mm_chat_builtin("") == NULL);
    CHECK(mm_chat_builtin("auto") == NULL);
    /* the built-ins differ from each other */
    for (size_t i = 0; i < MM_COUNT(names); i++)
        for (size_t j = i + 1; j < MM_COUNT(names); j++)
            CHECK(strcmp(mm_chat_builtin(names[i]), mm_chat_builtin(names[j])) != 0);
}

static void test_inline(void)
{
    /* served as it is, whitespace and all */
    check_choice("  {{ messages[0].content }}\n", NULL, 0, "  {{ messages[0].content }}\n");
    check_choice("{{ bos_token }}123456789", NULL, 0, "{{ bos_token }}123456789");   /* 24 */
    check_choice("{xxxxxxxxxxxxxxxxxxx", NULL, 0, "{xxxxxxxxxxxxxxxxxxx");                  /* exactly 20 */
    check_choice("{xxxxxxxxxxxxxxxxxx", NULL, 0, "(error)");                                /* 19 */
    /* 20 characters are counted as Python does, in code points: 19 of them here in 21 bytes */
    check_choice("{\xc3\xa9\xc3\xa9xxxxxxxxxxxxxxxx", NULL, 0, "(error)");
    check_choice("{\xc3\xa9\xc3\xa9xxxxxxxxxxxxxxxxx", NULL, 0, "{\xc3\xa9\xc3\xa9xxxxxxxxxxxxxxxxx");
    check_choice("no braces here, but long enough", NULL, 0, "(error)");
    check_choice("foo", NULL, 0, "(error)");
    check_choice("Auto", NULL, 0, "(error)");
    /* empty: mergekit's `if not chat_template` sets nothing */
    check_choice("", NULL, 0, "(none)");
}

static void test_message(void)
{
    mm_err err = {{0}};
    char *got = choose("foo", NULL, 0, &err);
    CHECK_STR_EQ(got, "(error)");
    free(got);
    CHECK_STR_EQ(err.msg, "merge.yml:7:16: chat_template: 'foo' is neither auto, a built-in name (alpaca, chatml, "
                          "exaone, llama3, mistral) nor a Jinja template (at least 20 characters with '{')");
    /* the value is quoted with its control characters escaped */
    got = choose("chat\nml", NULL, 0, &err);
    free(got);
    CHECK_STR_CONTAINS(err.msg, "chat_template: 'chat\\nml' is neither");
    /* without a place; and a NULL err is fine */
    char *out = NULL;
    CHECK(mm_chat_choose("x{", NULL, 0, NULL, &out, &err) == -EINVAL && out == NULL);
    CHECK(strncmp(err.msg, "chat_template: 'x{' is neither", 30) == 0);
    CHECK(mm_chat_choose("x{", NULL, 0, "m.yml:1:1", &out, NULL) == -EINVAL && out == NULL);
}

int main(void)
{
    test_auto();
    test_builtins();
    test_inline();
    test_message();
    return mm_check_report();
}

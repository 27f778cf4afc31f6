/* The `chat_template` option (chat.h): our built-in templates and the choice mergekit's
 * merge.py _set_chat_template makes. The templates are written here, not taken from mergekit; what they
 * must reproduce is the text mergekit's files of the same names render under transformers' rules
 * (trim_blocks, lstrip_blocks, loopcontrols, raise_exception), as tests/reference/tokenizer_eval.py
 * render_builtin spells it out. Each template keeps to one line and puts literal whitespace in Jinja
 * strings, so neither trim_blocks nor lstrip_blocks can touch it. */
#include <errno.h>
#include <string.h>

#include "chat.h"

/* Alphabetical, the order the error message lists them in. */
static const struct {
    const char *name, *text;
} builtins[] = {
    /* The last system message (trimmed) heads the prompt; then user, assistant and user_context turns
     * under their Alpaca headings, trimmed, separated by blank lines (system turns print nothing but
     * still count for loop.last, as in mergekit's loop over all messages). */
    {"alpaca",
     "{% set systems = messages | selectattr('role', 'equalto', 'system') | list %}"
     "{{ (systems | last).content | trim if systems else '' }}{{ '\\n\\n' }}"
     "{% set heading = {'user': '### Instruction:\\n', 'assistant': '### Response:\\n', "
     "'user_context': '### Input:\\n'} %}"
     "{% for m in messages %}{% if m.role in heading %}"
     "{{ heading[m.role] ~ m.content | trim }}{% if not loop.last %}{{ '\\n\\n' }}{% endif %}"
     "{% endif %}{% endfor %}"
     "{% if add_generation_prompt and messages[-1].role != 'assistant' %}{{ '### Response:\\n' }}{% endif %}"},
    /* ChatML: <|im_start|>ROLE, newline, CONTENT<|im_end|>, newline, per message. */
    {"chatml",
     "{% for m in messages %}{{ '<|im_start|>' ~ m.role ~ '\\n' ~ m.content ~ '<|im_end|>\\n' }}{% endfor %}"
     "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"},
    /* mergekit's exaone.jinja is indented and lstrip_blocks strips indentation before block tags only,
     * so its output carries the 8 or 4 spaces and the newline of each of its expression lines: a
     * blank system turn first unless the conversation opens with one, "[|ROLE|]CONTENT", then an empty
     * line (user) or "[|endofturn|]" (others). */
    {"exaone",
     "{% for m in messages %}"
     "{% if loop.first and m.role != 'system' %}{{ '        [|system|][|endofturn|]\\n\\n' }}{% endif %}"
     "{{ '    [|' ~ m.role ~ '|]' ~ m.content ~ '\\n' }}"
     "{{ '        \\n\\n' if m.role == 'user' else '        [|endofturn|]\\n\\n' }}"
     "{% endfor %}"
     "{% if add_generation_prompt %}{{ '    [|assistant|]\\n' }}{% endif %}"},
    /* Llama 3 headers, content trimmed, bos before the first message, a newline after each. */
    {"llama3",
     "{% for m in messages %}{% if loop.first %}{{ bos_token }}{% endif %}"
     "{{ '<|start_header_id|>' ~ m.role ~ '<|end_header_id|>\\n\\n' ~ m.content | trim ~ '<|eot_id|>\\n' }}"
     "{% endfor %}"
     "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"},
    /* Mistral [INST] turns; an opening system message goes before the first user turn. Refuses (as
     * mergekit's does) roles that do not alternate user/assistant starting with user, and any other
     * role after the system message. */
    {"mistral",
     "{% set has_system = messages[0].role == 'system' %}"
     "{% set turns = messages[1:] if has_system else messages %}"
     "{{ bos_token }}"
     "{% for m in turns %}"
     "{% if (m.role == 'user') == (loop.index0 is odd) %}"
     "{{ raise_exception('mistral: after an optional system message, roles must alternate user, assistant, "
     "user, ...') }}"
     "{% elif m.role == 'user' %}"
     "{{ ' [INST] ' ~ (messages[0].content ~ '\\n\\n' if loop.first and has_system else '') ~ m.content ~ "
     "' [/INST]' }}"
     "{% elif m.role == 'assistant' %}{{ ' ' ~ m.content ~ eos_token }}"
     "{% else %}{{ raise_exception('mistral: only user and assistant messages may follow the system "
     "message') }}"
     "{% endif %}{% endfor %}"},
};

const char *mm_chat_builtin(const char *name)
{
    for (size_t i = 0; i < MM_COUNT(builtins); i++)
        if (strcmp(builtins[i].name, name) == 0)
            return builtins[i].text;
    return NULL;
}

/* Bytes of the code point at s[0..avail) if it is whitespace by Python's str.isspace (what str.strip
 * removes: the ASCII ones, \x1c-\x1f, U+0085, U+00A0 and the Unicode spaces and separators), else 0.
 * The templates come from JSON, so they are UTF-8. */
static size_t space_len(const unsigned char *s, size_t avail)
{
    if (avail >= 1 && ((s[0] >= 0x09 && s[0] <= 0x0d) || (s[0] >= 0x1c && s[0] <= 0x20)))
        return 1;
    if (avail >= 2 && s[0] == 0xc2 && (s[1] == 0x85 || s[1] == 0xa0))
        return 2;
    if (avail < 3)
        return 0;
    unsigned cp = (unsigned)(s[0] & 0x0f) << 12 | (unsigned)(s[1] & 0x3f) << 6 | (s[2] & 0x3f);
    if ((s[0] & 0xf0) != 0xe0 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
        return 0;
    if (cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f ||
        cp == 0x205f || cp == 0x3000)
        return 3;
    return 0;
}

/* str.strip(): the start and length of t without leading and trailing whitespace. */
static void strip(const char *t, const char **start, size_t *len)
{
    const unsigned char *b = (const unsigned char *)t, *e = b + strlen(t);
    size_t k;
    while (b < e && (k = space_len(b, (size_t)(e - b))) > 0)
        b += k;
    while (e > b) {
        const unsigned char *c = e - 1; /* back to the start of the last code point (at most 3 bytes) */
        while (c > b && e - c < 3 && (*c & 0xc0) == 0x80)
            c--;
        if (space_len(c, (size_t)(e - c)) != (size_t)(e - c))
            break;
        e = c;
    }
    *start = (const char *)b;
    *len = (size_t)(e - b);
}

/* "auto": Counter(stripped).most_common(1) — the highest count, the first seen among equal counts. */
static char *choose_auto(const char *const *templates, size_t n)
{
    const char *best = NULL;
    size_t best_len = 0, best_count = 0;
    for (size_t i = 0; i < n; i++) {
        if (!templates[i] || !templates[i][0]) /* mergekit: `if template:` (an empty one is none) */
            continue;
        const char *s;
        size_t len, count = 0, seen_before = 0;
        strip(templates[i], &s, &len);
        for (size_t j = 0; j < n; j++) {
            if (!templates[j] || !templates[j][0])
                continue;
            const char *o;
            size_t olen;
            strip(templates[j], &o, &olen);
            if (olen == len && memcmp(o, s, len) == 0) {
                count++;
                seen_before += j < i;
            }
        }
        /* Only a template's first occurrence competes; strictly more wins, so ties keep the earlier. */
        if (!seen_before && count > best_count) {
            best = s;
            best_len = len;
            best_count = count;
        }
    }
    return best ? mm_xstrndup(best, best_len) : NULL;
}

int mm_chat_choose(const char *opt, const char *const *templates, size_t n, const char *where, char **out,
                   mm_err *err)
{
    *out = NULL;
    if (!opt[0]) /* mergekit: `if not chat_template: return` */
        return 0;
    if (strcmp(opt, "auto") == 0) {
        *out = choose_auto(templates, n);
        return 0;
    }
    const char *b = mm_chat_builtin(opt);
    if (b) {
        *out = mm_xstrdup(b);
        return 0;
    }
    /* Python's len() counts code points, not bytes: skip UTF-8 continuation bytes. */
    size_t chars = 0;
    for (const char *p = opt; *p; p++)
        chars += ((unsigned char)*p & 0xc0) != 0x80;
    if (chars < 20 || !strchr(opt, '{')) {
        char q[200];
        return mm_err_set(err, -EINVAL,
                          "%s%schat_template: %s is neither auto, a built-in name (alpaca, chatml, exaone, "
                          "llama3, mistral) nor a Jinja template (at least 20 characters with '{')",
                          where ? where : "", where && where[0] ? ": " : "", mm_quote(q, sizeof q, opt, strlen(opt)));
    }
    *out = mm_xstrdup(opt);
    return 0;
}

#include "tools/mountopts.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* What libfuse 3.14's fuse_session_new accepts in -o (lib/fuse_lowlevel.c fuse_ll_opts, lib/mount.c
 * fuse_mount_opts and its mount_flags); it refuses the whole mount on any other option, so nothing
 * else may reach it. An entry ending in '=' takes a value, as in fuse_opt templates ("fsname=%s"). */
static const char *const k_fuse_opts[] = {
    "debug", "allow_root", "allow_other", "auto_unmount", "blkdev", "default_permissions", "fsname=",
    "subtype=", "max_read=", "blksize=", "context=", "fscontext=", "defcontext=", "rootcontext=", "user=",
    "ro", "rw", "suid", "nosuid", "dev", "nodev", "exec", "noexec", "async", "sync", "dirsync", "atime",
    "noatime",
};

/* Options of mount(8) and fstab that a FUSE daemon has nothing to do with: mount(8), systemd or
 * mount.fuse3 act on them (and usually strip them before we are run), or the kernel would apply them
 * to a block device. Accepted and dropped, so an fstab line written for mount(8) also works when the
 * same options reach mergemount directly. An entry ending in '=' takes a value; one ending in '-' is a
 * prefix (x-systemd.automount, X-mount.mkdir). */
static const char *const k_dropped_opts[] = {
    "defaults", "auto", "noauto", "user", "nouser", "users", "owner", "group", "_netdev", "nofail",
    "relatime", "norelatime", "strictatime", "nostrictatime", "lazytime", "nolazytime", "diratime",
    "nodiratime", "iversion", "noiversion", "mand", "nomand", "silent", "loud", "comment=", "x-", "X-",
};

/* Does option `text` (unescaped, "key" or "key=value") match table entry `e`? */
static int matches(const char *e, const char *text, size_t keylen)
{
    size_t n = strlen(e);
    if (e[n - 1] == '-')
        return strncmp(text, e, n) == 0;
    if (e[n - 1] == '=')
        return keylen == n - 1 && text[keylen] == '=' && strncmp(text, e, keylen) == 0;
    return strcmp(text, e) == 0;
}

static int in_table(const char *const *table, size_t n, const char *text, size_t keylen)
{
    for (size_t i = 0; i < n; i++)
        if (matches(table[i], text, keylen))
            return 1;
    return 0;
}

/* The long option named `key` (with '_' for '-'), skipping "help" (an fstab line cannot ask for help)
 * and entries that set a flag instead of returning a value. */
static const struct option *find_long(const struct option *lo, const char *key, size_t keylen)
{
    for (; lo->name; lo++) {
        if (lo->flag || strcmp(lo->name, "help") == 0 || strlen(lo->name) != keylen)
            continue;
        size_t i = 0;
        while (i < keylen && (lo->name[i] == key[i] || (lo->name[i] == '-' && key[i] == '_')))
            i++;
        if (i == keylen)
            return lo;
    }
    return NULL;
}

/* The length of the raw option at s: up to the first comma not escaped by a backslash. */
static size_t raw_len(const char *s)
{
    size_t i = 0;
    while (s[i] && s[i] != ',')
        i += s[i] == '\\' && s[i + 1] ? 2 : 1;
    return i;
}

/* Undoes libfuse's escapes (lib/fuse_opt.c process_real_option_group): "\ooo" is an octal byte, a
 * backslash before anything else stands for that character. */
static char *unescape(const char *s, size_t len)
{
    char *out = mm_xmalloc(len + 1), *d = out;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\\' && i + 1 < len) {
            i++;
            if (i + 2 < len && s[i] >= '0' && s[i] <= '3' && s[i + 1] >= '0' && s[i + 1] <= '7' &&
                s[i + 2] >= '0' && s[i + 2] <= '7') {
                *d++ = (char)((s[i] - '0') * 64 + (s[i + 1] - '0') * 8 + (s[i + 2] - '0'));
                i += 2;
                continue;
            }
        }
        *d++ = s[i];
    }
    *d = 0;
    return out;
}

static int unknown(const char *key, size_t keylen, const struct option *longopts, mm_err *err)
{
    /* Suggestions in the spelling the user writes: long options with '_', libfuse's without '='. */
    size_t nlong = 0;
    for (const struct option *lo = longopts; lo->name; lo++)
        nlong++;
    char **cands = mm_xcalloc(nlong + MM_COUNT(k_fuse_opts), sizeof *cands);
    size_t n = 0;
    for (const struct option *lo = longopts; lo->name; lo++) {
        char *c = mm_xstrdup(lo->name);
        for (char *p = c; *p; p++)
            if (*p == '-')
                *p = '_';
        cands[n++] = c;
    }
    for (size_t i = 0; i < MM_COUNT(k_fuse_opts); i++)
        cands[n++] = mm_xstrndup(k_fuse_opts[i], strcspn(k_fuse_opts[i], "="));
    char *word = mm_xstrndup(key, keylen);
    const char *near = mm_suggest(word, (const char *const *)cands, n);
    int rc = near ? mm_err_set(err, -EINVAL, "unknown mount option '%s' (did you mean '%s'?)", word, near)
                  : mm_err_set(err, -EINVAL,
                               "unknown mount option '%s' (neither an option of mergemount mount, with '_' for "
                               "'-', nor a FUSE or mount(8) option; see mergemount mount --help)",
                               word);
    free(word);
    for (size_t i = 0; i < n; i++)
        free(cands[i]);
    free(cands);
    return rc;
}

/* Sorts one option (unescaped text, raw as given). */
static int add_one(const char *text, const char *raw, size_t rawlen, const struct option *longopts,
                   mm_mountopts *out, mm_err *err)
{
    size_t keylen = strcspn(text, "=");
    const char *value = text[keylen] == '=' ? text + keylen + 1 : NULL;
    const struct option *lo = find_long(longopts, text, keylen);
    if (lo) {
        if (lo->has_arg == required_argument && !value)
            return mm_err_set(err, -EINVAL, "mount option '%.*s' needs a value (%.*s=...)", (int)keylen, text,
                              (int)keylen, text);
        if (lo->has_arg == no_argument && value)
            return mm_err_set(err, -EINVAL, "mount option '%.*s' takes no value (write just %.*s)", (int)keylen,
                              text, (int)keylen, text);
        if (out->n == out->cap) {
            out->cap = out->cap ? out->cap * 2 : 8;
            out->opts = mm_xrealloc(out->opts, out->cap * sizeof *out->opts);
        }
        out->opts[out->n++] = (mm_mountopt){.val = lo->val, .arg = value ? mm_xstrdup(value) : NULL};
        return 0;
    }
    if (in_table(k_fuse_opts, MM_COUNT(k_fuse_opts), text, keylen)) {
        mm_buf_printf(&out->fuse, "%s%.*s", out->fuse.len ? "," : "", (int)rawlen, raw);
        return 0;
    }
    if (in_table(k_dropped_opts, MM_COUNT(k_dropped_opts), text, keylen))
        return 0;
    return unknown(text, keylen, longopts, err);
}

int mm_mountopts_parse(const char *arg, const struct option *longopts, mm_mountopts *out, mm_err *err)
{
    for (const char *s = arg; *s;) {
        size_t len = raw_len(s);
        if (len > 0) { /* ",," and a trailing comma are empty options, which libfuse skips too */
            char *text = unescape(s, len);
            int rc = add_one(text, s, len, longopts, out, err);
            free(text);
            if (rc < 0)
                return rc;
        }
        s += len;
        if (*s == ',')
            s++;
    }
    return 0;
}

void mm_mountopts_free(mm_mountopts *o)
{
    for (size_t i = 0; i < o->n; i++)
        free(o->opts[i].arg);
    free(o->opts);
    mm_buf_free(&o->fuse);
    o->opts = NULL;
    o->n = o->cap = 0;
}

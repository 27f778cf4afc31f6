/* tools/mountopts: mount's -o options sorted into long options, libfuse's options and dropped ones. */
#include <errno.h>
#include <getopt.h>

#include "check.h"
#include "tools/mountopts.h"

enum { V_CACHE_DIR = 1000, V_NO_CACHE, V_CACHE_SIZE, V_LEVEL };

/* A command's table as main.c writes them: names with '-', one optional argument, help. */
static const struct option k_lo[] = {{"foreground", no_argument, 0, 'f'},
                                     {"cache-dir", required_argument, 0, V_CACHE_DIR},
                                     {"no-cache", no_argument, 0, V_NO_CACHE},
                                     {"cache-size", required_argument, 0, V_CACHE_SIZE},
                                     {"level", optional_argument, 0, V_LEVEL},
                                     {"help", no_argument, 0, 'h'},
                                     {0, 0, 0, 0}};

/* Parses `arg` into a fresh set; returns the rc, with the set and message left for the checks. */
static int parse(const char *arg, mm_mountopts *o, mm_err *err)
{
    memset(o, 0, sizeof *o);
    memset(err, 0, sizeof *err);
    return mm_mountopts_parse(arg, k_lo, o, err);
}

static const char *fuse_of(const mm_mountopts *o)
{
    return o->fuse.data ? o->fuse.data : "";
}

static void test_long_options_by_underscore_name(void)
{
    mm_mountopts o;
    mm_err err;
    CHECK(parse("cache_dir=/var/cache/mm,no_cache,foreground", &o, &err) == 0);
    CHECK(o.n == 3);
    CHECK(o.n == 3 && o.opts[0].val == V_CACHE_DIR && strcmp(o.opts[0].arg, "/var/cache/mm") == 0);
    CHECK(o.n == 3 && o.opts[1].val == V_NO_CACHE && o.opts[1].arg == NULL);
    CHECK(o.n == 3 && o.opts[2].val == 'f' && o.opts[2].arg == NULL);
    CHECK(strcmp(fuse_of(&o), "") == 0);
    mm_mountopts_free(&o);
}

static void test_dashed_names_and_optional_values(void)
{
    mm_mountopts o;
    mm_err err;
    CHECK(parse("cache-size=20G,level,level=3", &o, &err) == 0);
    CHECK(o.n == 3 && o.opts[0].val == V_CACHE_SIZE && strcmp(o.opts[0].arg, "20G") == 0);
    CHECK(o.n == 3 && o.opts[1].val == V_LEVEL && o.opts[1].arg == NULL);
    CHECK(o.n == 3 && o.opts[2].val == V_LEVEL && strcmp(o.opts[2].arg, "3") == 0);
    mm_mountopts_free(&o);
}

static void test_fuse_options_pass_through_in_order(void)
{
    mm_mountopts o;
    mm_err err;
    CHECK(parse("ro,allow_other,cache_dir=/c,max_read=131072,fsname=my\\,model,default_permissions,dev,suid", &o,
                &err) == 0);
    /* Escapes stay as given: libfuse undoes them itself. */
    CHECK(strcmp(fuse_of(&o), "ro,allow_other,max_read=131072,fsname=my\\,model,default_permissions,dev,suid") == 0);
    CHECK(o.n == 1 && o.opts[0].val == V_CACHE_DIR);
    mm_mountopts_free(&o);
}

static void test_generic_mount_options_dropped(void)
{
    mm_mountopts o;
    mm_err err;
    CHECK(parse("defaults,nofail,_netdev,noauto,auto,user,users,nouser,owner,group,x-systemd.automount,"
                "x-systemd.idle-timeout=60,X-mount.mkdir,comment=systemd.automount,relatime,nodiratime",
                &o, &err) == 0);
    CHECK(o.n == 0);
    CHECK(strcmp(fuse_of(&o), "") == 0);
    mm_mountopts_free(&o);
}

static void test_escapes_in_values(void)
{
    mm_mountopts o;
    mm_err err;
    /* "\," is a comma, "\\" a backslash, "\ooo" an octal byte, "\x" just x. */
    CHECK(parse("cache_dir=/a\\,b\\\\c\\054d\\qe,no_cache", &o, &err) == 0);
    CHECK(o.n == 2 && strcmp(o.opts[0].arg, "/a,b\\c,dqe") == 0);
    CHECK(o.n == 2 && o.opts[1].val == V_NO_CACHE);
    mm_mountopts_free(&o);
}

static void test_empty_options_skipped(void)
{
    mm_mountopts o;
    mm_err err;
    CHECK(parse(",,ro,,no_cache,", &o, &err) == 0);
    CHECK(o.n == 1 && strcmp(fuse_of(&o), "ro") == 0);
    mm_mountopts_free(&o);
    CHECK(parse("", &o, &err) == 0 && o.n == 0);
    mm_mountopts_free(&o);
}

static void test_accumulates_over_several_dash_o(void)
{
    mm_mountopts o;
    mm_err err;
    CHECK(parse("ro,no_cache", &o, &err) == 0);
    CHECK(mm_mountopts_parse("allow_other,cache_dir=/x", k_lo, &o, &err) == 0);
    CHECK(o.n == 2 && o.opts[0].val == V_NO_CACHE && o.opts[1].val == V_CACHE_DIR);
    CHECK(strcmp(fuse_of(&o), "ro,allow_other") == 0);
    mm_mountopts_free(&o);
}

static void test_unknown_option_named(void)
{
    mm_mountopts o;
    mm_err err;
    CHECK(parse("ro,cache_dri=/x", &o, &err) == -EINVAL);
    CHECK_STR_CONTAINS(err.msg, "unknown mount option 'cache_dri'");
    CHECK_STR_CONTAINS(err.msg, "did you mean 'cache_dir'?");
    mm_mountopts_free(&o);
    CHECK(parse("frobnicate_the_widgets", &o, &err) == -EINVAL);
    CHECK_STR_CONTAINS(err.msg, "unknown mount option 'frobnicate_the_widgets' (neither");
    mm_mountopts_free(&o);
    /* A libfuse option that needs a value is unknown without one, as libfuse would find it. */
    CHECK(parse("fsname", &o, &err) == -EINVAL);
    CHECK_STR_CONTAINS(err.msg, "'fsname'");
    mm_mountopts_free(&o);
    /* help is not an option an fstab line can give. */
    CHECK(parse("help", &o, &err) == -EINVAL);
    mm_mountopts_free(&o);
    /* Options mount.fuse3 handles itself are not ours either. */
    CHECK(parse("setuid=nobody", &o, &err) == -EINVAL);
    CHECK_STR_CONTAINS(err.msg, "'setuid'");
    mm_mountopts_free(&o);
}

static void test_values_checked_against_the_table(void)
{
    mm_mountopts o;
    mm_err err;
    CHECK(parse("cache_dir", &o, &err) == -EINVAL);
    CHECK_STR_CONTAINS(err.msg, "mount option 'cache_dir' needs a value (cache_dir=...)");
    mm_mountopts_free(&o);
    CHECK(parse("no_cache=1", &o, &err) == -EINVAL);
    CHECK_STR_CONTAINS(err.msg, "mount option 'no_cache' takes no value");
    mm_mountopts_free(&o);
    /* An empty value is a value. */
    CHECK(parse("cache_dir=", &o, &err) == 0 && o.n == 1 && strcmp(o.opts[0].arg, "") == 0);
    mm_mountopts_free(&o);
}

int main(void)
{
    test_long_options_by_underscore_name();
    test_dashed_names_and_optional_values();
    test_fuse_options_pass_through_in_order();
    test_generic_mount_options_dropped();
    test_escapes_in_values();
    test_empty_options_skipped();
    test_accumulates_over_several_dash_o();
    test_unknown_option_named();
    test_values_checked_against_the_table();
    return mm_check_report();
}

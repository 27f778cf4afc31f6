/* merge/srcfile: a source file changed after opening — rewritten in place (even with its mtime set
 * back), truncated, replaced by a rename, deleted — stops feeding reads, for good, with one log line;
 * a read error of an unchanged file is reported once and is not final; the path is looked at no more
 * than once per interval. */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "merge/plan/srcfile.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* A fresh file of `len` bytes of `fill`. The pause lets any coarse timestamp tick over, so that the
 * changes the tests make afterwards are visible even on filesystems without fine-grained times. */
static void fresh(const char *path, int fill, size_t len)
{
    char buf[4096];
    memset(buf, fill, sizeof buf);
    check_write_file(path, buf, len < sizeof buf ? len : sizeof buf);
    sleep_ms(20);
}

static mm_srcfile *open_ok(const char *path)
{
    mm_srcfile *f = NULL;
    mm_err err;
    CHECK(mm_srcfile_open(path, &f, &err) == 0);
    CHECK(f && mm_srcfile_check(f) == 0 && mm_srcfile_verify(f) == 0 && mm_srcfile_unchanged(f));
    return f;
}

/* Lines of the captured log that name `what`. */
static int log_lines(const char *log_path, const char *what)
{
    char *text = NULL;
    size_t len = 0;
    if (mm_file_read_all(log_path, 1 << 20, &text, &len, NULL) < 0)
        return -1;
    int n = 0;
    for (char *line = text; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = 0;
        n += strstr(line, what) != NULL;
        line = nl ? nl + 1 : NULL;
    }
    free(text);
    return n;
}

static void rewritten_in_place_with_mtime_set_back(void)
{
    fresh("inplace", 'a', 4096);
    mm_srcfile *f = open_ok("inplace");
    struct stat before;
    CHECK(stat("inplace", &before) == 0);
    int fd = open("inplace", O_WRONLY);
    CHECK(fd >= 0 && pwrite(fd, "zz", 2, 100) == 2);
    struct timespec times[2] = {before.st_atim, before.st_mtim};
    CHECK(futimens(fd, times) == 0); /* the mtime as it was: only ctime tells */
    close(fd);
    char buf[8];
    CHECK(mm_srcfile_pread(f, buf, sizeof buf, 0) == -EIO);
    CHECK(mm_srcfile_verify(f) == -EIO);
    CHECK(mm_srcfile_check(f) == -EIO); /* final, without waiting for the interval */
    CHECK(!mm_srcfile_unchanged(f));
    mm_srcfile_close(f);
}

static void truncated(void)
{
    fresh("trunc", 'b', 4096);
    mm_srcfile *f = open_ok("trunc");
    CHECK(truncate("trunc", 1000) == 0);
    char buf[64];
    /* a read that meets the new end reports the change at once */
    CHECK(mm_srcfile_pread(f, buf, sizeof buf, 2000) == -EIO);
    CHECK(mm_srcfile_check(f) == -EIO);
    /* bytes before the cut are still the old ones, but the file feeds nothing any more */
    CHECK(mm_srcfile_pread(f, buf, sizeof buf, 0) == -EIO);
    mm_srcfile_close(f);
}

static void replaced_and_deleted(void)
{
    fresh("replaced", 'c', 4096);
    fresh("other", 'd', 4096);
    fresh("deleted", 'e', 4096);
    mm_srcfile *r = open_ok("replaced"), *d = open_ok("deleted");
    CHECK(rename("other", "replaced") == 0);
    CHECK(unlink("deleted") == 0);
    CHECK(!mm_srcfile_unchanged(r) && !mm_srcfile_unchanged(d));
    /* Unlinking moves the ctime of the old inode on local filesystems, so verify may see it at once;
     * the path check sees it within the interval in any case. */
    sleep_ms(MM_SRCFILE_RECHECK_MS + 50);
    char buf[16];
    CHECK(mm_srcfile_check(r) == -EIO);
    CHECK(mm_srcfile_pread(d, buf, sizeof buf, 0) == -EIO);
    CHECK(mm_srcfile_verify(r) == -EIO && mm_srcfile_verify(d) == -EIO);
    mm_srcfile_close(r);
    mm_srcfile_close(d);
}

/* Renaming the folder leaves the file's inode untouched: only the path shows it, and the path is
 * looked at no more than once per interval; until then the old (opened) bytes are served. */
static void folder_moved_away(void)
{
    CHECK(mkdir("sub", 0755) == 0);
    fresh("sub/file", 'g', 4096);
    double t0 = now_ms();
    mm_srcfile *f = open_ok("sub/file");
    CHECK(rename("sub", "sub2") == 0);
    char buf[16];
    int rc = mm_srcfile_pread(f, buf, sizeof buf, 0);
    if (now_ms() - t0 < MM_SRCFILE_RECHECK_MS * 0.8) /* when this ran soon enough to tell */
        CHECK(rc == 0 && buf[0] == 'g');
    CHECK(!mm_srcfile_unchanged(f));
    sleep_ms(MM_SRCFILE_RECHECK_MS + 50);
    CHECK(mm_srcfile_pread(f, buf, sizeof buf, 0) == -EIO);
    CHECK(mm_srcfile_check(f) == -EIO && mm_srcfile_verify(f) == -EIO);
    mm_srcfile_close(f);
    CHECK(unlink("sub2/file") == 0 && rmdir("sub2") == 0);
}

static void read_error_is_not_final(void)
{
    fresh("fine", 'f', 4096);
    mm_srcfile *f = open_ok("fine");
    CHECK(mm_srcfile_failed(f, -EIO) == -EIO);
    CHECK(mm_srcfile_failed(f, -EIO) == -EIO);
    CHECK(mm_srcfile_check(f) == 0 && mm_srcfile_verify(f) == 0);
    char buf[16];
    CHECK(mm_srcfile_pread(f, buf, sizeof buf, 10) == 0 && buf[0] == 'f' && buf[15] == 'f');
    mm_srcfile_close(f);
}

static void bad_opens(void)
{
    mm_srcfile *f = NULL;
    mm_err err;
    CHECK(mm_srcfile_open("missing", &f, &err) == -ENOENT && f == NULL);
    CHECK_STR_CONTAINS(err.msg, "missing");
    CHECK(mm_srcfile_open(".", &f, &err) == -EINVAL && f == NULL);
}

int main(void)
{
    char dir[PATH_MAX];
    char *old_cwd;
    if (check_enter_tmpdir(dir, "mm-srcfile", &old_cwd) < 0)
        return 1;
    /* The log goes to a file, to count its lines. */
    int saved = dup(2), log = open("log", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(saved >= 0 && log >= 0 && dup2(log, 2) == 2);

    rewritten_in_place_with_mtime_set_back();
    truncated();
    replaced_and_deleted();
    folder_moved_away();
    read_error_is_not_final();
    bad_opens();

    CHECK(dup2(saved, 2) == 2);
    close(saved);
    close(log);
    char *text = NULL;
    if (mm_check_fail && mm_file_read_all("log", 1 << 20, &text, NULL, NULL) == 0)
        fprintf(stderr, "--- log (with the failures above) ---\n%s", text);
    free(text);
    /* One line per changed file however many reads failed; one per file with read errors. */
    CHECK(log_lines("log", "error: inplace was modified after") == 1);
    CHECK(log_lines("log", "error: trunc changed size (4096 -> 1000 bytes)") == 1);
    CHECK(log_lines("log", "error: replaced was") == 1);
    CHECK(log_lines("log", "replaced by another file") == 1);
    CHECK(log_lines("log", "error: deleted was deleted") == 1);
    CHECK(log_lines("log", "error: sub/file was deleted") == 1);
    CHECK(log_lines("log", "error: cannot read fine: ") == 1);
    CHECK(log_lines("log", "mergemount: ") == 6);
    const char *names[] = {"inplace", "trunc", "replaced", "fine", "log"};
    for (size_t i = 0; i < MM_COUNT(names); i++)
        unlink(names[i]);
    CHECK(chdir(old_cwd) == 0 && rmdir(dir) == 0);
    free(old_cwd);
    return mm_check_report();
}

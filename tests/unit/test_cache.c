/* cache/: the LMDB block cache without FUSE. Every test uses its own directory under a mkdtemp root. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lmdb.h>

#include "cache/cache.h"
#include "check.h"

#define MIB (1024u * 1024u)
#define HDR 24u /* value header, counted in stored bytes */

static char root[64];
static int dir_seq;

static char *new_dir(void)
{
    return mm_xasprintf("%s/c%d", root, ++dir_seq);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void make_key(unsigned char key[MM_CACHE_KEY_LEN], unsigned i)
{
    for (int b = 0; b < 32; b++)
        key[b] = (unsigned char)(0xa5 ^ (b * 7) ^ (i * 13));
    for (int b = 0; b < 8; b++)
        key[32 + b] = (unsigned char)((uint64_t)i >> (56 - 8 * b));
}

/* Random-looking bytes, a function of (seed, position) only. */
static void fill(unsigned char *p, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (unsigned char)(x >> 24);
    }
}

static mm_cache *open_cache(const char *dir, uint64_t limit)
{
    mm_cache_options o = {.dir = dir, .size_limit = limit};
    mm_cache *c = NULL;
    mm_err err = {{0}};
    int rc = mm_cache_open(&o, &c, &err);
    if (rc)
        fprintf(stderr, "open %s: %s\n", dir, err.msg);
    CHECK(rc == 0 && c != NULL);
    return c;
}

/* 1: a hit with exactly `want`; 0: a miss; -1: a hit with other bytes. */
static int lookup(mm_cache *c, mm_cache_table t, const void *key, const void *want, size_t len)
{
    mm_cache_hit hit;
    size_t klen = t == MM_CACHE_STATS ? MM_CACHE_RECIPE_LEN : MM_CACHE_KEY_LEN;
    if (!mm_cache_get(c, t, key, klen, &hit))
        return 0;
    int ok = hit.len == len && (len == 0 || memcmp(hit.data, want, len) == 0);
    mm_cache_release(c, &hit);
    return ok ? 1 : -1;
}

static void put_block(mm_cache *c, unsigned i, size_t len, uint64_t seed)
{
    unsigned char key[MM_CACHE_KEY_LEN];
    unsigned char *v = mm_xmalloc(len ? len : 1);
    make_key(key, i);
    fill(v, len, seed);
    mm_cache_put(c, MM_CACHE_BLOCKS, key, sizeof key, v, len);
    free(v);
}

/* 1 hit with the bytes put_block(i, len, seed) stored, 0 miss, -1 wrong bytes. */
static int has_block(mm_cache *c, unsigned i, size_t len, uint64_t seed)
{
    unsigned char key[MM_CACHE_KEY_LEN];
    unsigned char *v = mm_xmalloc(len ? len : 1);
    make_key(key, i);
    fill(v, len, seed);
    int r = lookup(c, MM_CACHE_BLOCKS, key, v, len);
    free(v);
    return r;
}

static mm_cache_counters counters(mm_cache *c)
{
    mm_cache_counters k;
    mm_cache_counters_get(c, &k);
    return k;
}

static mm_cache_info info_of(const char *dir, uint64_t limit)
{
    mm_cache_options o = {.dir = dir, .size_limit = limit};
    mm_cache_info i;
    mm_err err = {{0}};
    int rc = mm_cache_info_get(&o, &i, &err);
    if (rc)
        fprintf(stderr, "info %s: %s\n", dir, err.msg);
    CHECK(rc == 0);
    return i;
}

static void test_checksum(void)
{
    unsigned char buf[4200], copy[4208];
    fill(buf, sizeof buf, 1);
    size_t lens[] = {0, 1, 7, 8, 9, 31, 32, 33, 63, 64, 65, 100, 1000, 4097};
    for (size_t li = 0; li < MM_COUNT(lens); li++) {
        size_t n = lens[li];
        uint64_t h = mm_checksum64(buf, n);
        /* every single flipped bit is detected */
        int missed = 0;
        for (size_t bit = 0; bit < n * 8; bit += n > 100 ? 13 : 1) {
            buf[bit / 8] ^= (unsigned char)(1u << (bit % 8));
            missed += mm_checksum64(buf, n) == h;
            buf[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        }
        CHECK(missed == 0);
        /* independent of alignment */
        for (size_t off = 1; off < 8; off++) {
            memcpy(copy + off, buf, n);
            CHECK(mm_checksum64(copy + off, n) == h);
        }
    }
    /* the same over any cut into pieces (cuts inside words and chunks, empty pieces, many pieces) */
    for (size_t li = 0; li < MM_COUNT(lens); li++) {
        const size_t n = lens[li];
        const uint64_t h = mm_checksum64(buf, n);
        for (size_t a = 0; a <= n; a += n > 200 ? 61 : 1)
            for (size_t b = a; b <= n; b += n > 200 ? 173 : 3) {
                const struct iovec three[3] = {{buf, a}, {buf + a, b - a}, {buf + b, n - b}};
                CHECK(mm_checksum64_pieces(three, 3) == h);
            }
        struct iovec bytes[64];
        if (n <= 64) {
            for (size_t i = 0; i < n; i++)
                bytes[i] = (struct iovec){buf + i, 1};
            CHECK(mm_checksum64_pieces(bytes, n) == h);
        }
    }
    /* zero runs of different lengths differ */
    unsigned char zero[64] = {0};
    int same = 0;
    for (size_t a = 0; a < 64; a++)
        for (size_t b = a + 1; b < 64; b++)
            same += mm_checksum64(zero, a) == mm_checksum64(zero, b);
    CHECK(same == 0);
}

static void test_default_dir(void)
{
    char *d = mm_cache_default_dir("/abs/dir");
    CHECK(strcmp(d, "/abs/dir") == 0);
    free(d);
    char *cwd = getcwd(NULL, 0);
    d = mm_cache_default_dir("rel/dir");
    char *want = mm_xasprintf("%s/rel/dir", cwd);
    CHECK(strcmp(d, want) == 0);
    free(d), free(want), free(cwd);

    char *old_xdg = getenv("XDG_CACHE_HOME") ? mm_xstrdup(getenv("XDG_CACHE_HOME")) : NULL;
    char *old_home = getenv("HOME") ? mm_xstrdup(getenv("HOME")) : NULL;
    setenv("XDG_CACHE_HOME", "/x/cachehome", 1);
    d = mm_cache_default_dir(NULL);
    CHECK(strcmp(d, "/x/cachehome/mergemount") == 0);
    free(d);
    setenv("XDG_CACHE_HOME", "relative", 1); /* ignored, as the XDG spec says */
    setenv("HOME", "/x/home", 1);
    d = mm_cache_default_dir(NULL);
    CHECK(strcmp(d, "/x/home/.cache/mergemount") == 0);
    free(d);
    unsetenv("XDG_CACHE_HOME");
    d = mm_cache_default_dir("");
    CHECK(strcmp(d, "/x/home/.cache/mergemount") == 0);
    free(d);
    if (old_xdg)
        setenv("XDG_CACHE_HOME", old_xdg, 1);
    if (old_home)
        setenv("HOME", old_home, 1);
    else
        unsetenv("HOME");
    free(old_xdg), free(old_home);
}

static void test_round_trip_and_reopen(void)
{
    char *dir = new_dir();
    mm_cache *c = open_cache(dir, 64ull * MIB);
    if (!c) {
        free(dir);
        return;
    }
    unsigned char skey[MM_CACHE_RECIPE_LEN], sval[200];
    memset(skey, 0x42, sizeof skey);
    fill(sval, sizeof sval, 99);
    put_block(c, 1, 100000, 1);
    put_block(c, 2, 0, 2); /* an empty value is a value */
    mm_cache_put(c, MM_CACHE_STATS, skey, sizeof skey, sval, sizeof sval);
    mm_cache_flush(c);
    CHECK(has_block(c, 1, 100000, 1) == 1);
    CHECK(has_block(c, 2, 0, 2) == 1);
    CHECK(lookup(c, MM_CACHE_STATS, skey, sval, sizeof sval) == 1);
    CHECK(has_block(c, 3, 10, 3) == 0); /* unknown key */
    /* the tables are separate: the stats key is not a block key */
    unsigned char bkey[MM_CACHE_KEY_LEN] = {0};
    memcpy(bkey, skey, sizeof skey);
    CHECK(lookup(c, MM_CACHE_BLOCKS, bkey, sval, sizeof sval) == 0);
    /* a key of the wrong length is a miss and a put of it is ignored */
    mm_cache_hit hit;
    CHECK(mm_cache_get(c, MM_CACHE_BLOCKS, skey, sizeof skey, &hit) == 0);
    mm_cache_put(c, MM_CACHE_STATS, bkey, sizeof bkey, sval, sizeof sval);
    mm_cache_counters k = counters(c);
    CHECK(k.puts_stored == 3 && k.puts_dropped == 0 && k.corrupt == 0 && k.resets == 0 && k.evictions == 0);

    /* NOOVERWRITE: the second value for a key is dropped, the first stays */
    put_block(c, 1, 100000, 777);
    put_block(c, 4, 5000, 4);
    put_block(c, 4, 5000, 5); /* same group commit as the first put of key 4 */
    mm_cache_flush(c);
    k = counters(c);
    CHECK(k.puts_stored == 4 && k.puts_dropped == 2);
    CHECK(has_block(c, 1, 100000, 1) == 1);
    CHECK(has_block(c, 4, 5000, 4) == 1);

    /* a put is visible at once (served from the queue), and a hit from the queue stays valid while the
     * writer commits and lets go of it */
    unsigned char key6[MM_CACHE_KEY_LEN], *v6 = mm_xmalloc(70000);
    make_key(key6, 6);
    fill(v6, 70000, 6);
    mm_cache_put(c, MM_CACHE_BLOCKS, key6, sizeof key6, v6, 70000);
    CHECK(mm_cache_get(c, MM_CACHE_BLOCKS, key6, sizeof key6, &hit) == 1);
    mm_cache_flush(c);
    CHECK(hit.len == 70000 && memcmp(hit.data, v6, 70000) == 0);
    mm_cache_release(c, &hit);
    CHECK(hit.txn == NULL && hit.data == NULL);
    CHECK(has_block(c, 6, 70000, 6) == 1);
    CHECK(counters(c).puts_stored == 5);
    free(v6);

    /* close commits what is still queued */
    put_block(c, 5, 3000, 5);
    mm_cache_close(c);

    c = open_cache(dir, 64ull * MIB);
    if (c) {
        CHECK(has_block(c, 1, 100000, 1) == 1);
        CHECK(has_block(c, 4, 5000, 4) == 1);
        CHECK(has_block(c, 5, 3000, 5) == 1);
        CHECK(lookup(c, MM_CACHE_STATS, skey, sval, sizeof sval) == 1);
        k = counters(c);
        CHECK(k.puts_stored == 0 && k.resets == 0);
        mm_cache_close(c);
    }

    mm_cache_info i = info_of(dir, 64ull * MIB);
    CHECK(i.dir && strcmp(i.dir, dir) == 0);
    CHECK(i.blocks == 5 && i.stats_entries == 1);
    CHECK(i.stored_bytes == (100000 + HDR) + HDR + (5000 + HDR) + (70000 + HDR) + (3000 + HDR) + (200 + HDR));
    CHECK(i.size_limit == 64ull * MIB);
    CHECK(i.file_bytes >= i.stored_bytes);
    mm_cache_info_free(&i);
    free(dir);
}

static void test_size_limit_and_lru(void)
{
    char *dir = new_dir();
    const uint64_t limit = MIB;
    const size_t len = 32 * 1024;
    mm_cache *c = open_cache(dir, limit);
    if (!c) {
        free(dir);
        return;
    }
    for (unsigned i = 0; i < 20; i++)
        put_block(c, i, len, i);
    mm_cache_flush(c);
    CHECK(counters(c).evictions == 0);
    /* key 0 is the oldest; a hit moves it to the recent end (a queued touch) */
    CHECK(has_block(c, 0, len, 0) == 1);
    mm_cache_flush(c);
    for (unsigned i = 20; i < 40; i++)
        put_block(c, i, len, i);
    mm_cache_flush(c);
    mm_cache_counters k = counters(c);
    CHECK(k.evictions >= 9 && k.evictions <= 12);
    CHECK(k.puts_stored == 40 && k.puts_dropped == 0);
    CHECK(has_block(c, 0, len, 0) == 1); /* touched: survived */
    CHECK(has_block(c, 1, len, 1) == 0); /* least recently used: evicted */
    CHECK(has_block(c, 39, len, 39) == 1);
    CHECK(has_block(c, 20, len, 20) == 1);
    /* a value larger than the whole cache is not stored */
    put_block(c, 100, limit, 100);
    mm_cache_flush(c);
    CHECK(counters(c).puts_dropped == 1);
    CHECK(has_block(c, 100, limit, 100) == 0);
    mm_cache_close(c);

    mm_cache_info i = info_of(dir, limit);
    CHECK(i.stored_bytes <= limit && i.stored_bytes > limit / 2);
    CHECK(i.stored_bytes == i.blocks * (len + HDR));
    CHECK(i.blocks == 40 - k.evictions);
    mm_cache_info_free(&i);
    free(dir);
}

/* Finds `pat` in the file and xors one byte at `at` bytes after it. Returns how many places changed. */
static int flip_in_file(const char *path, const unsigned char *pat, size_t patlen, size_t at)
{
    char *data = NULL;
    size_t n = 0;
    mm_err err;
    if (mm_file_read_all(path, 1u << 30, &data, &n, &err) != 0)
        return 0;
    int fd = open(path, O_WRONLY);
    int places = 0;
    for (char *p = data; fd >= 0 && (p = memmem(p, n - (size_t)(p - data), pat, patlen)) != NULL; p++) {
        unsigned char b = (unsigned char)p[at] ^ 0x5a;
        places += pwrite(fd, &b, 1, (off_t)(p - data) + (off_t)at) == 1;
    }
    if (fd >= 0)
        close(fd);
    free(data);
    return places;
}

static void test_flipped_byte(void)
{
    char *dir = new_dir();
    const size_t len = 64 * 1024;
    mm_cache *c = open_cache(dir, 64ull * MIB);
    if (!c) {
        free(dir);
        return;
    }
    put_block(c, 7, len, 7);
    put_block(c, 8, len, 8);
    mm_cache_close(c);

    unsigned char *v = mm_xmalloc(len);
    fill(v, len, 7);
    char *data_mdb = mm_path_join(dir, "data.mdb");
    CHECK(flip_in_file(data_mdb, v + 4096, 64, 17) >= 1);
    free(data_mdb);
    free(v);

    c = open_cache(dir, 64ull * MIB);
    if (!c) {
        free(dir);
        return;
    }
    CHECK(has_block(c, 7, len, 7) == 0); /* the checksum catches it: a miss */
    mm_cache_counters k = counters(c);
    CHECK(k.corrupt == 1 && k.resets == 0);
    CHECK(has_block(c, 8, len, 8) == 1); /* the neighbour is intact */
    mm_cache_flush(c);                   /* the writer drops the bad entry */
    put_block(c, 7, len, 7);             /* so the recomputed value can be stored */
    mm_cache_flush(c);
    k = counters(c);
    CHECK(k.puts_stored == 1 && k.puts_dropped == 0);
    CHECK(has_block(c, 7, len, 7) == 1);
    mm_cache_close(c);
    mm_cache_info i = info_of(dir, 0);
    CHECK(i.blocks == 2 && i.stored_bytes == 2 * (len + HDR));
    CHECK(i.size_limit == MM_CACHE_DEFAULT_SIZE);
    mm_cache_info_free(&i);
    free(dir);
}

/* 1 when mm_cache_read of [from, from + n) of block i gives the bytes put_block(i, len, seed) stored at
 * from; 0 on a miss; -1 on other bytes. */
static int read_part(mm_cache *c, unsigned i, size_t len, uint64_t seed, size_t from, size_t n)
{
    unsigned char key[MM_CACHE_KEY_LEN];
    unsigned char *v = mm_xmalloc(len ? len : 1), *got = mm_xmalloc(n ? n : 1);
    make_key(key, i);
    fill(v, len, seed);
    memset(got, 0xee, n);
    int r = mm_cache_read(c, MM_CACHE_BLOCKS, key, sizeof key, len, from, got, n);
    if (r == 1 && memcmp(got, v + from, n) != 0)
        r = -1;
    free(v);
    free(got);
    return r;
}

/* Hits copied with pread at the value's place in data.mdb (mm_cache_read): any part of a large value, a
 * small value (inside a leaf page: read through the map), queued values, another length (a miss), and a
 * flipped byte on disk (a miss, counted corrupt), before and after the map's start is known. */
static void test_read_copies(void)
{
    char *dir = new_dir();
    const size_t big = (1u << 20) + 12345, small = 100;
    mm_cache *c = open_cache(dir, 256ull * MIB);
    if (!c) {
        free(dir);
        return;
    }
    put_block(c, 1, big, 1);
    CHECK(read_part(c, 1, big, 1, 0, big) == 1); /* from the queue, before any commit */
    put_block(c, 2, big, 2);
    put_block(c, 3, small, 3);
    put_block(c, 4, big, 4);
    mm_cache_close(c);

    c = open_cache(dir, 256ull * MIB);
    if (!c) {
        free(dir);
        return;
    }
    /* the first read learns where the map starts; the others use it */
    CHECK(read_part(c, 2, big, 2, 4096, 65536) == 1);
    CHECK(read_part(c, 2, big, 2, 0, big) == 1);
    CHECK(read_part(c, 2, big, 2, big - 7, 7) == 1);
    CHECK(read_part(c, 1, big, 1, 1, big - 1) == 1);
    CHECK(read_part(c, 4, big, 4, 777, 300000) == 1);
    CHECK(read_part(c, 3, small, 3, 10, 50) == 1);
    CHECK(read_part(c, 2, big - 1, 2, 0, 10) == 0); /* stored with another length */
    CHECK(read_part(c, 9, big, 9, 0, 10) == 0);     /* absent */
    CHECK(read_part(c, 2, big, 2, big, 1) == 0);    /* past the value: refused */
    unsigned char key[MM_CACHE_KEY_LEN];
    make_key(key, 4);
    CHECK(mm_cache_has(c, MM_CACHE_BLOCKS, key, sizeof key) == 1);
    make_key(key, 9);
    CHECK(mm_cache_has(c, MM_CACHE_BLOCKS, key, sizeof key) == 0);
    CHECK(counters(c).corrupt == 0);
    CHECK(counters(c).file_reads == 5); /* the large stored values, not the small one or the misses */
    mm_cache_close(c);

    /* a flipped byte in block 4 on disk: a new process (empty memo) finds it whichever part it reads */
    unsigned char *v = mm_xmalloc(big);
    fill(v, big, 4);
    char *data_mdb = mm_path_join(dir, "data.mdb");
    CHECK(flip_in_file(data_mdb, v + 500000, 64, 9) == 1);
    free(data_mdb);
    free(v);
    c = open_cache(dir, 256ull * MIB);
    if (!c) {
        free(dir);
        return;
    }
    CHECK(read_part(c, 2, big, 2, 0, 100) == 1); /* learns the map's start from an intact value */
    CHECK(read_part(c, 4, big, 4, 0, 100) == 0);
    CHECK(counters(c).corrupt == 1);
    CHECK(read_part(c, 1, big, 1, 0, big) == 1);
    mm_cache_close(c);
    free(dir);
}

/* Bytes of the file at path that are in the page cache (mincore of a map of it); -1 if unknown. */
static long long resident_bytes(const char *path, long long *size)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    long long n = -1;
    if (fd >= 0 && fstat(fd, &st) == 0 && st.st_size > 0) {
        const long pg = sysconf(_SC_PAGESIZE);
        const size_t pages = (size_t)((st.st_size + pg - 1) / pg);
        void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
        unsigned char *vec = malloc(pages);
        if (m != MAP_FAILED && vec && mincore(m, (size_t)st.st_size, vec) == 0) {
            n = 0;
            for (size_t i = 0; i < pages; i++)
                n += (vec[i] & 1) ? pg : 0;
        }
        free(vec);
        if (m != MAP_FAILED)
            munmap(m, (size_t)st.st_size);
        *size = st.st_size;
    }
    if (fd >= 0)
        close(fd);
    return n;
}

/* The writer drops what it wrote from the page cache once it is on disk, a step behind: of 240 MiB of
 * blocks (steps at 64, 128 and 192 MiB), the pages below the file's end at the 128 MiB step are gone
 * from it. Asserted with room to spare (at least 64 MiB gone; without the drop all 240 MiB stay): pages
 * that the kernel keeps anyway, such as a large folio across the boundary or pages LMDB has mapped,
 * left 118 MiB dropped instead of 128 in one ThreadSanitizer run. The blocks still read back. */
static void test_written_pages_dropped(void)
{
    char *dir = new_dir();
    mm_cache *c = open_cache(dir, 1024ull * MIB);
    struct statfs fs;
    if (!c || statfs(dir, &fs) != 0 || fs.f_type == 0x01021994 /* tmpfs: its pages cannot be dropped */) {
        if (c)
            fprintf(stderr, "test_written_pages_dropped: skipped, %s is on tmpfs\n", dir);
        mm_cache_close(c);
        free(dir);
        return;
    }
    const unsigned blocks = 240;
    for (unsigned i = 0; i < blocks; i++) {
        put_block(c, i, MIB, 1000 + i);
        if (i % 16 == 15)
            mm_cache_flush(c); /* no put waits for room, so none is dropped */
    }
    mm_cache_flush(c);
    CHECK(counters(c).puts_stored == blocks);
    char *data_mdb = mm_path_join(dir, "data.mdb");
    long long size = 0, res = resident_bytes(data_mdb, &size);
    CHECK(size >= (long long)blocks * MIB);
    CHECK(res >= 0 && res <= size - 64ll * MIB);
    if (!(res >= 0 && res <= size - 64ll * MIB))
        fprintf(stderr, "data.mdb: %lld of %lld bytes in the page cache\n", res, size);
    CHECK(has_block(c, 0, MIB, 1000) == 1);
    CHECK(has_block(c, blocks - 1, MIB, 1000 + blocks - 1) == 1);
    mm_cache_close(c);
    free(data_mdb);
    free(dir);
}

static void test_corrupt_environment(void)
{
    char *dir = new_dir();
    mm_cache *c = open_cache(dir, 64ull * MIB);
    if (!c) {
        free(dir);
        return;
    }
    for (unsigned i = 0; i < 10; i++)
        put_block(c, i, 20000, i);
    mm_cache_close(c);
    char *data_mdb = mm_path_join(dir, "data.mdb");
    struct stat st;
    CHECK(stat(data_mdb, &st) == 0 && st.st_size > 64 * 1024);
    size_t n = 64 * 1024;
    unsigned char *junk = mm_xmalloc(n);
    fill(junk, n, 1234);
    int fd = open(data_mdb, O_WRONLY);
    CHECK(fd >= 0 && pwrite(fd, junk, n, 0) == (ssize_t)n);
    if (fd >= 0)
        close(fd);
    free(junk);
    free(data_mdb);

    c = open_cache(dir, 64ull * MIB);
    if (!c) {
        free(dir);
        return;
    }
    CHECK(counters(c).resets == 1);
    CHECK(has_block(c, 3, 20000, 3) == 0);
    put_block(c, 3, 20000, 3);
    mm_cache_flush(c);
    CHECK(has_block(c, 3, 20000, 3) == 1);
    mm_cache_close(c);
    c = open_cache(dir, 64ull * MIB);
    if (c) {
        CHECK(counters(c).resets == 0);
        CHECK(has_block(c, 3, 20000, 3) == 1);
        mm_cache_close(c);
    }
    free(dir);
}

/* An LMDB environment that is not a mergemount cache (here: "blocks" is a plain key, not a table) is
 * treated like a corrupt one. */
static void test_foreign_environment(void)
{
    char *dir = new_dir();
    CHECK(mkdir(dir, 0755) == 0);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k = {6, (void *)"blocks"}, v = {5, (void *)"hello"};
    int rc = mdb_env_create(&env);
    if (!rc && !(rc = mdb_env_open(env, dir, 0, 0644)) && !(rc = mdb_txn_begin(env, NULL, 0, &txn))) {
        if (!(rc = mdb_dbi_open(txn, NULL, 0, &dbi)) && !(rc = mdb_put(txn, dbi, &k, &v, 0)))
            rc = mdb_txn_commit(txn);
        else
            mdb_txn_abort(txn);
    }
    mdb_env_close(env);
    CHECK(rc == 0);
    mm_cache *c = open_cache(dir, 64ull * MIB);
    if (c) {
        CHECK(counters(c).resets == 1);
        put_block(c, 1, 1000, 1);
        mm_cache_flush(c);
        CHECK(has_block(c, 1, 1000, 1) == 1);
        mm_cache_close(c);
    }
    free(dir);
}

static void test_clear_and_prune(void)
{
    char *dir = new_dir();
    const size_t len = 50000;
    mm_cache *c = open_cache(dir, 64ull * MIB);
    if (!c) {
        free(dir);
        return;
    }
    unsigned char skey[MM_CACHE_RECIPE_LEN] = {1, 2, 3};
    for (unsigned i = 0; i < 30; i++) {
        put_block(c, i, len, i);
        mm_cache_flush(c); /* one tick each: a defined LRU order */
    }
    mm_cache_put(c, MM_CACHE_STATS, skey, sizeof skey, "stats", 5);
    mm_cache_close(c);

    /* room for the 10 most recent blocks and the statistics entry (the newest of all) */
    mm_cache_options o = {.dir = dir, .size_limit = 10 * (len + HDR) + 5 + HDR};
    mm_err err = {{0}};
    uint64_t removed = 99;
    CHECK(mm_cache_prune(&o, &removed, &err) == 0);
    CHECK(removed == 20);
    mm_cache_info i = info_of(dir, o.size_limit);
    CHECK(i.stored_bytes <= o.size_limit);
    CHECK(i.blocks == 10 && i.stats_entries == 1);
    mm_cache_info_free(&i);
    CHECK(mm_cache_prune(&o, &removed, &err) == 0 && removed == 0);

    c = open_cache(dir, 64ull * MIB);
    if (c) {
        CHECK(has_block(c, 19, len, 19) == 0);
        CHECK(has_block(c, 20, len, 20) == 1);
        CHECK(has_block(c, 29, len, 29) == 1);
        mm_cache_close(c);
    }

    CHECK(mm_cache_clear(&o, &removed, &err) == 0);
    CHECK(removed == 10);
    i = info_of(dir, 0);
    CHECK(i.blocks == 0 && i.stats_entries == 0 && i.stored_bytes == 0);
    mm_cache_info_free(&i);
    c = open_cache(dir, 64ull * MIB);
    if (c) {
        CHECK(has_block(c, 29, len, 29) == 0);
        CHECK(lookup(c, MM_CACHE_STATS, skey, "stats", 5) == 0);
        put_block(c, 29, len, 29); /* still usable */
        mm_cache_flush(c);
        CHECK(has_block(c, 29, len, 29) == 1);
        mm_cache_close(c);
    }

    /* a directory without a cache: empty, and not created */
    char *none = mm_path_join(dir, "none");
    o.dir = none;
    i = info_of(none, 0);
    CHECK(i.blocks == 0 && i.file_bytes == 0 && i.dir && strcmp(i.dir, none) == 0);
    mm_cache_info_free(&i);
    CHECK(mm_cache_clear(&o, &removed, &err) == 0 && removed == 0);
    CHECK(mm_cache_prune(&o, &removed, &err) == 0 && removed == 0);
    CHECK(access(none, F_OK) != 0);
    free(none);
    free(dir);
}

static void test_unusable_dir(void)
{
    char *file = mm_path_join(root, "a-file");
    check_write_file(file, "x", 1);
    char *dir = mm_path_join(file, "sub");
    mm_cache_options o = {.dir = dir};
    mm_cache *c = (mm_cache *)&o;
    mm_err err = {{0}};
    int rc = mm_cache_open(&o, &c, &err);
    CHECK(rc < 0 && c == NULL);
    CHECK_STR_CONTAINS(err.msg, "cannot create the cache directory");
    CHECK_STR_CONTAINS(err.msg, dir);
    /* the NULL cache is a permanent miss (callers run uncached) */
    mm_cache_hit hit;
    unsigned char key[MM_CACHE_KEY_LEN] = {0};
    CHECK(mm_cache_get(NULL, MM_CACHE_BLOCKS, key, sizeof key, &hit) == 0);
    mm_cache_put(NULL, MM_CACHE_BLOCKS, key, sizeof key, "x", 1);
    mm_cache_flush(NULL);
    mm_cache_close(NULL);
    free(dir);
    free(file);
}

/* A reader holding a hit pins every page freed after its snapshot: churn then fills the map (MDB_MAP_FULL),
 * the writer evicts, retries, drops; the held bytes stay intact, and once released the cache recovers. */
static void test_map_full(void)
{
    char *dir = new_dir();
    const uint64_t limit = 2ull * MIB; /* map: the 8 MiB minimum */
    const size_t len = 256 * 1024 - 64;
    mm_cache *c = open_cache(dir, limit);
    if (!c) {
        free(dir);
        return;
    }
    put_block(c, 0, len, 0);
    mm_cache_flush(c);
    unsigned char key[MM_CACHE_KEY_LEN], *want = mm_xmalloc(len);
    make_key(key, 0);
    fill(want, len, 0);
    mm_cache_hit held;
    CHECK(mm_cache_get(c, MM_CACHE_BLOCKS, key, sizeof key, &held) == 1);
    for (unsigned i = 1; i <= 48; i++) {
        put_block(c, i, len, i);
        mm_cache_flush(c);
    }
    mm_cache_counters k = counters(c);
    CHECK(k.puts_dropped > 0);
    CHECK(held.len == len && memcmp(held.data, want, len) == 0);
    mm_cache_release(c, &held);
    for (unsigned i = 100; i < 110; i++) {
        put_block(c, i, len, i);
        mm_cache_flush(c);
    }
    mm_cache_counters k2 = counters(c);
    CHECK(k2.puts_stored == k.puts_stored + 10);
    CHECK(k2.puts_dropped == k.puts_dropped);
    CHECK(has_block(c, 109, len, 109) == 1);
    mm_cache_close(c);
    mm_cache_info i = info_of(dir, limit);
    CHECK(i.stored_bytes <= limit);
    mm_cache_info_free(&i);
    free(want);
    free(dir);
}

/* A full disk, simulated with RLIMIT_FSIZE: writes past the limit fail (EFBIG) like ENOSPC would. The
 * writer evicts room and retries, so nothing is dropped. */
static void test_disk_full(void)
{
    char *dir = new_dir();
    const size_t len = 256 * 1024 - 40; /* value + LMDB's page header = 64 pages */
    mm_cache *c = open_cache(dir, 64ull * MIB);
    if (!c) {
        free(dir);
        return;
    }
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 2 * MIB;
    void (*old_sig)(int) = signal(SIGXFSZ, SIG_IGN);
    CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    for (unsigned i = 0; i < 24; i++) {
        put_block(c, i, len, i);
        mm_cache_flush(c);
    }
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, old_sig);
    mm_cache_counters k = counters(c);
    CHECK(k.evictions > 0);
    CHECK(k.puts_stored == 24 && k.puts_dropped == 0);
    CHECK(has_block(c, 23, len, 23) == 1);
    CHECK(has_block(c, 0, len, 0) == 0);
    mm_cache_close(c);
    char *data_mdb = mm_path_join(dir, "data.mdb");
    struct stat st;
    CHECK(stat(data_mdb, &st) == 0 && (uint64_t)st.st_size <= 2 * MIB);
    free(data_mdb);
    free(dir);
}

#define NKEYS 64
#define NTHREADS 8
#define ITERS 3000

typedef struct {
    mm_cache *c;
    unsigned id;
    atomic_int *bad;
    atomic_long *puts;
} worker_arg;

static size_t key_len_of(unsigned i)
{
    return 1000 + (i * 397u) % 6000;
}

static void *worker(void *p)
{
    worker_arg *a = p;
    unsigned char want[8000];
    uint64_t x = a->id * 77 + 1;
    for (int it = 0; it < ITERS; it++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        unsigned i = (unsigned)(x >> 33) % NKEYS;
        size_t len = key_len_of(i);
        fill(want, len, i);
        unsigned char key[MM_CACHE_KEY_LEN];
        make_key(key, i);
        mm_cache_table t = i % 8 == 0 ? MM_CACHE_STATS : MM_CACHE_BLOCKS;
        mm_cache_hit hit;
        if (mm_cache_get(a->c, t, key, t == MM_CACHE_STATS ? MM_CACHE_RECIPE_LEN : MM_CACHE_KEY_LEN, &hit)) {
            if (hit.len != len || memcmp(hit.data, want, len) != 0)
                atomic_fetch_add(a->bad, 1);
            mm_cache_release(a->c, &hit);
        } else {
            mm_cache_put(a->c, t, key, t == MM_CACHE_STATS ? MM_CACHE_RECIPE_LEN : MM_CACHE_KEY_LEN, want, len);
            atomic_fetch_add(a->puts, 1);
        }
        if (it % 500 == 0)
            mm_cache_flush(a->c);
    }
    return NULL;
}

static void test_concurrency(void)
{
    char *dir = new_dir();
    mm_cache *c = open_cache(dir, 64ull * MIB);
    if (!c) {
        free(dir);
        return;
    }
    atomic_int bad = 0;
    atomic_long puts = 0;
    pthread_t th[NTHREADS];
    worker_arg args[NTHREADS];
    for (unsigned t = 0; t < NTHREADS; t++) {
        args[t] = (worker_arg){c, t, &bad, &puts};
        CHECK(pthread_create(&th[t], NULL, worker, &args[t]) == 0);
    }
    for (unsigned t = 0; t < NTHREADS; t++)
        pthread_join(th[t], NULL);
    mm_cache_flush(c);
    CHECK(atomic_load(&bad) == 0);
    mm_cache_counters k = counters(c);
    CHECK(k.corrupt == 0 && k.evictions == 0);
    CHECK(k.puts_stored + k.puts_dropped == (uint64_t)atomic_load(&puts));
    unsigned char want[8000];
    unsigned present = 0;
    for (unsigned i = 0; i < NKEYS; i++) {
        unsigned char key[MM_CACHE_KEY_LEN];
        make_key(key, i);
        fill(want, key_len_of(i), i);
        present += lookup(c, i % 8 == 0 ? MM_CACHE_STATS : MM_CACHE_BLOCKS, key, want, key_len_of(i)) == 1;
    }
    CHECK(present == NKEYS);
    CHECK(k.puts_stored == NKEYS); /* each key stored once however many threads raced to put it */
    mm_cache_close(c);
    free(dir);
}

/* Another process (a child) has the directory open while this one runs the offline commands, then both
 * put the same key: it is stored once. */
static void test_two_processes(void)
{
    char *dir = new_dir();
    const size_t len = 10000;
    int to_child[2], to_parent[2];
    CHECK(pipe(to_child) == 0 && pipe(to_parent) == 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        char b;
        int fail = 0;
        mm_cache_options o = {.dir = dir, .size_limit = 64ull * MIB};
        mm_cache *c = NULL;
        if (mm_cache_open(&o, &c, NULL) != 0)
            _exit(10);
        for (unsigned i = 1; i <= 5; i++)
            put_block(c, i, len, i);
        mm_cache_flush(c);
        fail |= write(to_parent[1], "r", 1) != 1;
        fail |= read(to_child[0], &b, 1) != 1; /* parent pruned, cleared and opened its own */
        fail |= has_block(c, 5, len, 5) != 0;
        put_block(c, 9, len, 9);
        mm_cache_flush(c);
        fail |= counters(c).puts_stored != 6;
        fail |= write(to_parent[1], "p", 1) != 1;
        fail |= read(to_child[0], &b, 1) != 1;
        fail |= has_block(c, 9, len, 9) != 1;
        mm_cache_close(c);
        _exit(fail ? 11 : 0);
    }
    CHECK(pid > 0);
    if (pid < 0) {
        free(dir);
        return;
    }
    char b = 0;
    CHECK(read(to_parent[0], &b, 1) == 1 && b == 'r');
    mm_cache_info i = info_of(dir, 0);
    CHECK(i.blocks == 5 && i.stored_bytes == 5 * (len + HDR));
    mm_cache_info_free(&i);
    mm_cache_options o = {.dir = dir, .size_limit = 3 * (len + HDR)};
    mm_err err = {{0}};
    uint64_t removed = 0;
    CHECK(mm_cache_prune(&o, &removed, &err) == 0 && removed == 2);
    CHECK(mm_cache_clear(&o, &removed, &err) == 0 && removed == 3);
    i = info_of(dir, 0);
    CHECK(i.blocks == 0 && i.stored_bytes == 0);
    mm_cache_info_free(&i);

    mm_cache *c = open_cache(dir, 64ull * MIB);
    CHECK(write(to_child[1], "g", 1) == 1);
    CHECK(read(to_parent[0], &b, 1) == 1 && b == 'p');
    if (c) {
        put_block(c, 9, len, 9);
        mm_cache_flush(c);
        mm_cache_counters k = counters(c);
        CHECK(k.puts_stored == 0 && k.puts_dropped == 1);
        CHECK(has_block(c, 9, len, 9) == 1);
    }
    CHECK(write(to_child[1], "e", 1) == 1);
    int status = -1;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
        fprintf(stderr, "child status %d\n", status);
    mm_cache_close(c);
    i = info_of(dir, 0);
    CHECK(i.blocks == 1);
    mm_cache_info_free(&i);
    close(to_child[0]), close(to_child[1]), close(to_parent[0]), close(to_parent[1]);
    free(dir);
}

/* ---- commits without sync: the record of unsynced commits (cache/cache_boot.h) ---- */

#define OTHER_BOOT "00000000-1111-2222-3333-444444444444"

/* This boot's id as the kernel gives it (trimmed), or "" without /proc. */
static void boot_id(char buf[64])
{
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    buf[0] = '\0';
    if (f && !fgets(buf, 64, f))
        buf[0] = '\0';
    if (f)
        fclose(f);
    buf[strcspn(buf, "\n")] = '\0';
}

static char *marker_of(const char *dir, long pid)
{
    return mm_xasprintf("%s/unsynced.%ld", dir, pid);
}

/* The text of pid's marker in dir (heap), or NULL when there is none. */
static char *marker_text(const char *dir, long pid)
{
    char *p = marker_of(dir, pid), *text = NULL;
    if (mm_file_read_all(p, 4096, &text, NULL, NULL) != 0)
        text = NULL;
    free(p);
    return text;
}

static void plant_marker(const char *dir, long pid, const char *boot)
{
    char *p = marker_of(dir, pid), *line = mm_xasprintf("%s\n", boot);
    check_write_file(p, line, strlen(line));
    free(line);
    free(p);
}

/* How many entries of dir are markers or their temporary files. */
static int markers_in(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL)
        n += strncmp(de->d_name, "unsynced.", 9) == 0;
    if (d)
        closedir(d);
    return n;
}

/* data.mdb's bytes (heap) and length, to show that something left it alone. */
static char *data_mdb_bytes(const char *dir, size_t *len)
{
    char *p = mm_path_join(dir, "data.mdb"), *data = NULL;
    *len = 0;
    if (mm_file_read_all(p, 1u << 30, &data, len, NULL) != 0)
        data = NULL;
    free(p);
    return data;
}

/* stderr into a file between begin and end (the cache logs with mm_log_warn). */
static int saved_stderr = -1;

static void capture_begin(void)
{
    char *p = mm_path_join(root, "stderr.txt");
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    free(p);
    fflush(stderr);
    saved_stderr = dup(2);
    CHECK(fd >= 0 && saved_stderr >= 0 && dup2(fd, 2) == 2);
    if (fd >= 0)
        close(fd);
}

static char *capture_end(void)
{
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    char *p = mm_path_join(root, "stderr.txt"), *text = NULL;
    if (mm_file_read_all(p, 1 << 20, &text, NULL, NULL) != 0)
        text = mm_xstrdup("");
    free(p);
    return text;
}

/* A cache in a new directory holding block 1 (1000 bytes, seed 1), closed. */
static char *dir_with_block(void)
{
    char *dir = new_dir();
    mm_cache *c = open_cache(dir, 64ull * MIB);
    if (c) {
        put_block(c, 1, 1000, 1);
        mm_cache_close(c);
    }
    return dir;
}

/* While open, the process's marker names this boot; a clean close (sync, then remove) leaves none, and
 * so do the offline commands. */
static void test_clean_close_leaves_no_marker(const char *boot)
{
    char *dir = new_dir();
    mm_cache *c = open_cache(dir, 64ull * MIB);
    if (!c) {
        free(dir);
        return;
    }
    char *text = marker_text(dir, getpid());
    char *want = mm_xasprintf("%s\n", boot);
    CHECK_STR_EQ(text, want);
    free(want);
    free(text);
    put_block(c, 1, 1000, 1);
    mm_cache_flush(c);
    CHECK(markers_in(dir) == 1);
    mm_cache_close(c);
    CHECK(markers_in(dir) == 0);
    mm_cache_info i = info_of(dir, 0);
    CHECK(i.blocks == 1);
    mm_cache_info_free(&i);
    mm_cache_options o = {.dir = dir};
    mm_err err = {{0}};
    uint64_t removed = 9;
    CHECK(mm_cache_prune(&o, &removed, &err) == 0 && removed == 0);
    CHECK(markers_in(dir) == 0);
    free(dir);
}

/* A process that ends without closing (a crash) leaves its marker; the kernel still holds its commits,
 * so the next open of this boot syncs them, keeps every block and removes the marker (and a temporary
 * file it may have died writing). Forks: run before this process has other threads. */
static void test_crashed_process_marker(const char *boot)
{
    char *dir = new_dir();
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        mm_cache_options o = {.dir = dir, .size_limit = 64ull * MIB};
        mm_cache *c = NULL;
        if (mm_cache_open(&o, &c, NULL) != 0)
            _exit(10);
        put_block(c, 1, 100000, 1);
        put_block(c, 2, 1000, 2);
        mm_cache_flush(c);
        _exit(has_block(c, 1, 100000, 1) == 1 ? 0 : 11); /* no close: no sync, the marker stays */
    }
    CHECK(pid > 0);
    int status = -1;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid); /* reaped: kill(pid, 0) now says ESRCH */
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    char *text = marker_text(dir, pid), *want = mm_xasprintf("%s\n", boot);
    CHECK_STR_EQ(text, want);
    free(text);
    free(want);
    char *tmp = mm_xasprintf("%s/unsynced.%ld.tmp", dir, (long)pid);
    check_write_file(tmp, "", 0);

    mm_cache *c = open_cache(dir, 64ull * MIB);
    if (c) {
        CHECK(has_block(c, 1, 100000, 1) == 1);
        CHECK(has_block(c, 2, 1000, 2) == 1);
        CHECK(counters(c).resets == 0);
        text = marker_text(dir, pid);
        CHECK(text == NULL);
        free(text);
        CHECK(access(tmp, F_OK) != 0);
        CHECK(markers_in(dir) == 1); /* ours */
        mm_cache_close(c);
    }
    CHECK(markers_in(dir) == 0);
    free(tmp);
    free(dir);
}

/* A marker of another boot: the system stopped while the environment had unsynced commits, so it may be
 * torn. The offline commands that must not delete (info, prune) fail and change nothing; the next open
 * starts anew (logged, counted) and then removes the marker; clear starts anew too. */
static void test_other_boot_marker(void)
{
    char *dir = dir_with_block();
    plant_marker(dir, 4242, OTHER_BOOT);
    size_t before_len, after_len;
    char *before = data_mdb_bytes(dir, &before_len);
    CHECK(before != NULL);

    mm_cache_options o = {.dir = dir};
    mm_cache_info i;
    mm_err err = {{0}};
    CHECK(mm_cache_info_get(&o, &i, &err) == -EIO);
    CHECK_STR_CONTAINS(err.msg, dir);
    CHECK_STR_CONTAINS(err.msg, "unsynced commits when the system stopped");
    char *hint = mm_xasprintf("mergemount cache clear --cache-dir %s starts a new one", dir);
    CHECK_STR_CONTAINS(err.msg, hint);
    free(hint);
    uint64_t removed = 9;
    err = (mm_err){{0}};
    CHECK(mm_cache_prune(&o, &removed, &err) == -EIO && removed == 0);
    CHECK_STR_CONTAINS(err.msg, "cache clear");
    char *after = data_mdb_bytes(dir, &after_len);
    CHECK(after && before && after_len == before_len && memcmp(after, before, before_len) == 0);
    free(after);
    free(before);
    CHECK(markers_in(dir) == 1);

    capture_begin();
    mm_cache *c = open_cache(dir, 64ull * MIB);
    char *log = capture_end();
    if (c) {
        CHECK(counters(c).resets == 1);
        CHECK(has_block(c, 1, 1000, 1) == 0);
        CHECK(markers_in(dir) == 1); /* only ours: the other boot's went once the new one existed */
        put_block(c, 1, 1000, 1);
        mm_cache_close(c);
    }
    CHECK_STR_CONTAINS(log, "warning: cache at");
    CHECK_STR_CONTAINS(log, dir);
    CHECK_STR_CONTAINS(log, "starting a new one");
    free(log);
    CHECK(markers_in(dir) == 0);
    c = open_cache(dir, 64ull * MIB); /* the new one is served */
    if (c) {
        CHECK(counters(c).resets == 0);
        CHECK(has_block(c, 1, 1000, 1) == 1);
        mm_cache_close(c);
    }

    plant_marker(dir, 4242, OTHER_BOOT);
    err = (mm_err){{0}};
    CHECK(mm_cache_clear(&o, &removed, &err) == 0 && removed == 0);
    CHECK(markers_in(dir) == 0);
    i = info_of(dir, 0);
    CHECK(i.blocks == 0);
    mm_cache_info_free(&i);
    free(dir);
}

/* A marker of this boot whose process runs (here: our parent's) is left alone, and while it is there
 * the environment is never wiped, even when it must be: that process is using it. */
static void test_live_marker(const char *boot)
{
    char *dir = dir_with_block();
    long parent = (long)getppid();
    plant_marker(dir, parent, boot);
    mm_cache *c = open_cache(dir, 64ull * MIB);
    if (c) {
        CHECK(has_block(c, 1, 1000, 1) == 1 && counters(c).resets == 0);
        mm_cache_close(c);
    }
    char *text = marker_text(dir, parent), *want = mm_xasprintf("%s\n", boot);
    CHECK_STR_EQ(text, want);
    free(text);
    free(want);
    mm_cache_info i = info_of(dir, 0);
    CHECK(i.blocks == 1);
    mm_cache_info_free(&i);
    CHECK(markers_in(dir) == 1);

    plant_marker(dir, 4242, OTHER_BOOT);
    mm_cache_options o = {.dir = dir, .size_limit = 64ull * MIB};
    mm_err err = {{0}};
    c = NULL;
    CHECK(mm_cache_open(&o, &c, &err) == -EBUSY && c == NULL);
    CHECK_STR_CONTAINS(err.msg, "still has it open");
    uint64_t removed = 9;
    CHECK(mm_cache_clear(&o, &removed, &err) == -EBUSY);
    CHECK(markers_in(dir) == 2);
    size_t len;
    char *data = data_mdb_bytes(dir, &len);
    CHECK(data != NULL && len > 0);
    free(data);

    char *live = marker_of(dir, parent);
    CHECK(unlink(live) == 0); /* it ended (cleanly) */
    free(live);
    c = open_cache(dir, 64ull * MIB);
    if (c) {
        CHECK(counters(c).resets == 1 && has_block(c, 1, 1000, 1) == 0);
        mm_cache_close(c);
    }
    CHECK(markers_in(dir) == 0);
    free(dir);
}

static void test_unsynced_commits(void)
{
    char boot[64];
    boot_id(boot);
    if (!boot[0]) {
        fprintf(stderr, "no /proc/sys/kernel/random/boot_id: commits sync, no markers to test\n");
        return;
    }
    test_crashed_process_marker(boot); /* first: it forks */
    test_clean_close_leaves_no_marker(boot);
    test_other_boot_marker();
    test_live_marker(boot);
}

int main(void)
{
    snprintf(root, sizeof root, "/tmp/mm-test-cache-XXXXXX");
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    test_checksum();
    test_default_dir();
    test_two_processes(); /* first: fork before this process has other threads */
    test_unsynced_commits(); /* forks too */
    test_round_trip_and_reopen();
    test_size_limit_and_lru();
    test_flipped_byte();
    test_read_copies();
    test_written_pages_dropped();
    test_corrupt_environment();
    test_foreign_environment();
    test_clear_and_prune();
    test_unusable_dir();
    test_map_full();
    test_disk_full();
    test_concurrency();
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return mm_check_report();
}

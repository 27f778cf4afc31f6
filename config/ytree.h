/* Private to config/: a YAML file read into a small tree of mappings, sequences and scalars that keeps
 * every node's position, with plain scalars typed the way PyYAML's safe_load types them (YAML 1.1), so
 * that mergekit configs mean here what they mean in mergekit.
 *
 * Typing of plain (unquoted, untagged) scalars:
 *   null   ~, null, Null, NULL, empty
 *   bool   yes/no/true/false/on/off in lower, Capitalised or UPPER case
 *   int    decimal with '_' separators, 0b binary, 0x hex, 0-prefixed octal, sexagesimal (1:30)
 *   float  1.5, 1., .5, 1.5e-3, .inf/.Inf/.INF (signed), .nan; and, beyond PyYAML, exponent forms without
 *          a dot or without an exponent sign (1e-5, 1E5, 1.0e5) and signed leading-dot forms (-.5):
 *          PyYAML reads those as strings, which no mergekit parameter can use, so nobody means a string.
 *   anything else, and every quoted or block scalar, is a string.
 * Explicit tags !!str, !!int, !!float, !!bool, !!null, !!map, !!seq are honoured; other tags are errors.
 * Anchors and aliases are supported (an alias shares the anchored node), as is the merge key `<<`.
 * A key given twice in one mapping: the later value wins, as in PyYAML, with a warning.
 * A stream with more than one document is an error (safe_load refuses it too).
 *
 * (Named ytree.h rather than yaml.h so that it can never shadow libyaml's <yaml.h>.)
 *
 * Ownership: every node belongs to its mm_ydoc and is freed with it. Not thread-safe while parsing;
 * the finished tree is read-only. */
#ifndef MM_CONFIG_YTREE_H
#define MM_CONFIG_YTREE_H

#include <stddef.h>

#include "base/util.h"

typedef enum { MM_YN_SCALAR, MM_YN_SEQ, MM_YN_MAP } mm_ynode_kind;
typedef enum { MM_YS_NULL, MM_YS_BOOL, MM_YS_INT, MM_YS_FLOAT, MM_YS_STR } mm_yscalar_type;

typedef struct mm_ynode mm_ynode;
typedef struct mm_ypair {
    const mm_ynode *key; /* always a scalar */
    const mm_ynode *value;
} mm_ypair;

struct mm_ynode {
    mm_ynode_kind kind;
    int line, col; /* 1-based */
    /* MM_YN_SCALAR */
    char *text;           /* the scalar's text as written (escapes decoded), NUL-terminated */
    int quoted;           /* 1 unless a plain scalar */
    mm_yscalar_type type;
    double num;           /* MM_YS_INT and MM_YS_FLOAT */
    long long ival;       /* MM_YS_INT when ival_ok (the value fits) */
    int ival_ok;
    int b;                /* MM_YS_BOOL */
    /* MM_YN_SEQ */
    const mm_ynode **items;
    size_t nitems;
    /* MM_YN_MAP: keys are unique */
    mm_ypair *pairs;
    size_t npairs;
    size_t weight;        /* node count with aliases expanded (bounds the work of walking the tree) */
};

typedef struct mm_ydoc mm_ydoc;

/* Parses `len` bytes of `text`. `file` is used in messages only. On success *doc holds the tree (its
 * root is NULL for a stream without any document); its lists and mappings nest at most 256 levels deep
 * and it expands to at most 2^20 nodes through aliases, so walking it, even recursively, is bounded.
 * Errors: -EINVAL with "<file>:<line>:<col>: YAML syntax error: <problem> (<hint>)" or a message about
 * an alias, tag, a non-text mapping key, or nesting or alias expansion beyond those bounds. Warnings (duplicate keys) go to mm_log_warn. */
int mm_yaml_parse(const char *file, const char *text, size_t len, mm_ydoc **doc, mm_err *err);
const mm_ynode *mm_ydoc_root(const mm_ydoc *doc);
void mm_ydoc_free(mm_ydoc *doc);

/* The value stored under `key` in a mapping, or NULL; *keynode (if non-NULL) gets the key's node. */
const mm_ynode *mm_ymap_get(const mm_ynode *map, const char *key, const mm_ynode **keynode);
/* 1 for a null scalar. */
int mm_ynode_is_null(const mm_ynode *n);
/* 1 for a scalar typed as a string. */
int mm_ynode_is_str(const mm_ynode *n);
/* "a mapping", "a list", "a number", "a boolean", "null" or "text", for messages. */
const char *mm_ynode_describe(const mm_ynode *n);

#endif

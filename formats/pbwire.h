/* Protocol Buffers wire format, read side only: the few primitives a reader of one known message type
 * needs (formats/spm.c reads sentencepiece's ModelProto with them).
 *
 * Why our own and not protobuf-c or libsentencepiece: libsentencepiece is a C++ library (a C++ runtime
 * and its protobuf in a C program, for a file we only read), and protobuf-c needs code generated from
 * sentencepiece_model.proto, a build step and a library to read a dozen scalar fields and one repeated
 * message. The wire format is four encodings; this file is all of them that a proto2 reader meets.
 *
 * Strictness: everything that is not well-formed wire data is an error with the byte offset, from the
 * start of the whole buffer: a varint longer than 10 bytes or beyond 64 bits, a length or fixed-size
 * value running past its message, field number 0, wire types 6 and 7, and groups (wire types 3 and 4:
 * deprecated since proto2's first release and written by no sentencepiece version; refusing them keeps
 * skipping flat, with no recursion for a hostile file to exhaust). Non-minimal varints (0x80 0x00 for 0)
 * are accepted, as every protobuf runtime accepts them. */
#ifndef MM_PBWIRE_H
#define MM_PBWIRE_H

#include <stddef.h>
#include <stdint.h>

#include "base/util.h"

enum { MM_PB_VARINT = 0, MM_PB_FIXED64 = 1, MM_PB_LEN = 2, MM_PB_FIXED32 = 5 };

/* A reader over one message: [p, end), within the buffer starting at base (for offsets in messages). */
typedef struct mm_pb {
    const uint8_t *p, *end, *base;
} mm_pb;

/* A reader over a whole buffer. */
mm_pb mm_pb_init(const void *data, size_t len);

/* The byte offset of the next read from the start of the buffer. */
size_t mm_pb_offset(const mm_pb *r);

/* Reads the next field's key. Returns 1 with *field and *wtype set, 0 at the end of the message, or
 * -EINVAL (bad key: truncated or overlong varint, field 0 or beyond 2^29 - 1, wire type 3, 4, 6 or 7). */
int mm_pb_next(mm_pb *r, uint32_t *field, int *wtype, mm_err *err);

/* The value of a field whose key was just read, in the encoding of its wire type. 0 or -EINVAL. */
int mm_pb_varint(mm_pb *r, uint64_t *v, mm_err *err);
int mm_pb_fixed32(mm_pb *r, uint32_t *v, mm_err *err);
/* A length-delimited value: *data points into the buffer, *len bytes. */
int mm_pb_bytes(mm_pb *r, const uint8_t **data, size_t *len, mm_err *err);
/* A reader over an embedded message (a length-delimited value). */
int mm_pb_sub(mm_pb *r, mm_pb *sub, mm_err *err);
/* Skips the value of a field of wire type `wtype` (an unknown field). */
int mm_pb_skip(mm_pb *r, int wtype, mm_err *err);

/* "varint", "fixed64", "length-delimited", "fixed32" (for messages about a wrong wire type). */
const char *mm_pb_wtype_name(int wtype);

#endif

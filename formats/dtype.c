#include "dtype.h"

#include <string.h>

#include "base/util.h"

static const struct {
    const char *st;
    const char *torch;
    size_t size;
} info[MM_DT_COUNT] = {
    [MM_DT_BOOL] = {"BOOL", "bool", 1},
    [MM_DT_U8] = {"U8", "uint8", 1},
    [MM_DT_I8] = {"I8", "int8", 1},
    [MM_DT_F8_E5M2] = {"F8_E5M2", "float8_e5m2", 1},
    [MM_DT_F8_E4M3] = {"F8_E4M3", "float8_e4m3fn", 1},
    [MM_DT_I16] = {"I16", "int16", 2},
    [MM_DT_U16] = {"U16", "uint16", 2},
    [MM_DT_F16] = {"F16", "float16", 2},
    [MM_DT_BF16] = {"BF16", "bfloat16", 2},
    [MM_DT_I32] = {"I32", "int32", 4},
    [MM_DT_U32] = {"U32", "uint32", 4},
    [MM_DT_F32] = {"F32", "float32", 4},
    [MM_DT_F64] = {"F64", "float64", 8},
    [MM_DT_I64] = {"I64", "int64", 8},
    [MM_DT_U64] = {"U64", "uint64", 8},
};

static int valid(mm_dtype t)
{
    return (int)t >= 0 && t < MM_DT_COUNT;
}

size_t mm_dtype_size(mm_dtype t)
{
    return valid(t) ? info[t].size : 0;
}

const char *mm_dtype_name(mm_dtype t)
{
    return valid(t) ? info[t].st : "none";
}

const char *mm_dtype_torch_name(mm_dtype t)
{
    return valid(t) ? info[t].torch : NULL;
}

mm_dtype mm_dtype_from_st_name(const char *s)
{
    for (int i = 0; i < MM_DT_COUNT; i++)
        if (strcmp(s, info[i].st) == 0)
            return (mm_dtype)i;
    return MM_DT_NONE;
}

mm_dtype mm_dtype_from_config_name(const char *s)
{
    if (strncmp(s, "torch.", 6) == 0)
        s += 6;
    static const struct {
        const char *name;
        mm_dtype t;
    } names[] = {
        {"bfloat16", MM_DT_BF16}, {"bf16", MM_DT_BF16}, {"float16", MM_DT_F16}, {"fp16", MM_DT_F16},
        {"half", MM_DT_F16},      {"float32", MM_DT_F32}, {"fp32", MM_DT_F32}, {"float", MM_DT_F32},
    };
    for (size_t i = 0; i < MM_COUNT(names); i++)
        if (strcmp(s, names[i].name) == 0)
            return names[i].t;
    return MM_DT_NONE;
}

int mm_dtype_is_computable(mm_dtype t)
{
    return t == MM_DT_F32 || t == MM_DT_F16 || t == MM_DT_BF16;
}

mm_dtype mm_dtype_promote(mm_dtype a, mm_dtype b)
{
    if (a == b)
        return a;
    return MM_DT_F32; /* bf16+f16 and anything with f32 promote to f32 */
}

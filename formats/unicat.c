/* Unicode classes (formats/unicat.h). */
#include "unicat.h"

#include <stddef.h>

typedef struct mm_unicat_range {
    uint32_t lo, hi;
    uint8_t cls;
} mm_unicat_range;

#include "unicat_table.h"

unsigned mm_unicat(uint32_t cp)
{
    size_t lo = 0, hi = sizeof mm_unicat_ranges / sizeof mm_unicat_ranges[0];
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < mm_unicat_ranges[mid].lo)
            hi = mid;
        else if (cp > mm_unicat_ranges[mid].hi)
            lo = mid + 1;
        else
            return mm_unicat_ranges[mid].cls;
    }
    return 0;
}

/* PropList.txt's White_Space: stable since Unicode 6.3 (U+180E left it then). */
int mm_uni_space(uint32_t cp)
{
    if (cp <= 0x20)
        return cp == 0x20 || (cp >= 0x09 && cp <= 0x0d);
    return cp == 0x85 || cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 ||
           cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

int mm_uni_word(uint32_t cp)
{
    if (cp < 0x80)
        return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '_';
    if (cp == 0x200c || cp == 0x200d) /* Join_Control */
        return 1;
    /* Other_Alphabetic symbols (So): circled Latin letters, and the parenthesized, circled and squared
     * capitals of the Enclosed Alphanumeric Supplement */
    if ((cp >= 0x24b6 && cp <= 0x24e9) || (cp >= 0x1f130 && cp <= 0x1f149) || (cp >= 0x1f150 && cp <= 0x1f169) ||
        (cp >= 0x1f170 && cp <= 0x1f189))
        return 1;
    return (mm_unicat(cp) & (MM_UNI_L | MM_UNI_NL | MM_UNI_M | MM_UNI_ND | MM_UNI_PC)) != 0;
}

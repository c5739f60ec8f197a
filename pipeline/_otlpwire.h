/* Protobuf wire primitives shared by otelpipe's C extensions (processors/privacy/_wirewalk.c has its own,
 * older ones): connectors/genai_metrics/_genaiwire.c, exporters/datadog/_ddwire.c,
 * exporters/pagerduty/_pdwire.c and exporters/loki/_lokiwire.c include this header so a varint, a tag
 * or a skipped value is read one way.
 *
 * Every function returns 0 on success and -1 on anything a strict reader refuses (a truncated or
 * overlong varint, a tag longer than 5 bytes or with field number 0, groups and wire types 3, 4, 6 and 7,
 * a length past the end). The extensions answer -1 by handing the whole request to their Python code,
 * which then decides with the protobuf parser's own rules; so these checks may be stricter than
 * protobuf's, never looser. pipeline/wire.py is the Python counterpart. */
#ifndef OTELPIPE_OTLPWIRE_H
#define OTELPIPE_OTLPWIRE_H

#include <stdint.h>

/* A varint of at most 10 bytes whose value fits 64 bits, from [p, end); *out is the byte after it. */
static inline int ow_varint(const unsigned char *p, const unsigned char *end, const unsigned char **out,
                            uint64_t *v) {
    uint64_t r = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (p >= end)
            return -1;
        unsigned char b = *p++;
        if (shift == 63 && b > 1)
            return -1;
        r |= (uint64_t)(b & 0x7F) << shift;
        if (b < 0x80) {
            *out = p;
            *v = r;
            return 0;
        }
    }
    return -1;
}

/* A tag: at most 5 bytes, a field number from 1 to 2^29 - 1, its wire type in *wt. */
static inline int ow_tag(const unsigned char *p, const unsigned char *end, const unsigned char **out,
                         uint32_t *field, int *wt) {
    uint64_t t;
    const unsigned char *q;
    if (ow_varint(p, end, &q, &t) < 0 || q - p > 5 || t > 0xFFFFFFFFu || (t >> 3) == 0)
        return -1;
    *out = q;
    *field = (uint32_t)(t >> 3);
    *wt = (int)(t & 7);
    return 0;
}

/* Skips a value of wire type `wt` starting at p (groups and unknown wire types refused). */
static inline int ow_skip(const unsigned char *p, const unsigned char *end, int wt, const unsigned char **out) {
    uint64_t n;
    switch (wt) {
    case 0:
        return ow_varint(p, end, out, &n);
    case 1:
        if (end - p < 8)
            return -1;
        *out = p + 8;
        return 0;
    case 2:
        if (ow_varint(p, end, &p, &n) < 0 || n > (uint64_t)(end - p))
            return -1;
        *out = p + n;
        return 0;
    case 5:
        if (end - p < 4)
            return -1;
        *out = p + 4;
        return 0;
    default:
        return -1;
    }
}

#endif

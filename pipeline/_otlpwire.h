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

#include <stddef.h>
#include <stdint.h>
#include <string.h>

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

/* Strict UTF-8 in [s, e): no overlong forms, no surrogates, nothing past U+10FFFF, as the protobuf parser
 * checks a string field. 1 when valid. */
static inline int ow_utf8_valid(const unsigned char *s, const unsigned char *e) {
    while (s < e) {
        uint64_t eight;
        if (e - s >= 8 && (memcpy(&eight, s, 8), (eight & 0x8080808080808080ULL) == 0)) {
            s += 8; /* eight ASCII bytes */
            continue;
        }
        unsigned char c = *s;
        if (c < 0x80) {
            s++;
            continue;
        }
        ptrdiff_t n;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (e - s <= n)
            return 0;
        for (ptrdiff_t i = 1; i <= n; i++) {
            if ((s[i] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i] & 0x3F);
        }
        if ((n == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return 0;
        s += n + 1;
    }
    return 1;
}

/* The contents of a JSON string holding the UTF-8 text s[0:n], escaped as orjson escapes them (", \, \b
 * \t \n \f \r, other control characters as \u00xx, nothing else), written at w, which has room for 6 * n
 * bytes; returns the end of what it wrote. The exporters that write JSON in C give orjson's bytes. */
static inline char *ow_json_escape(char *w, const unsigned char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            size_t run = i + 1; /* copy the run of bytes that need no escape at once */
            while (run < n && s[run] >= 0x20 && s[run] != '"' && s[run] != '\\')
                run++;
            memcpy(w, s + i, run - i);
            w += run - i;
            i = run - 1;
            continue;
        }
        *w++ = '\\';
        switch (c) {
        case '"': *w++ = '"'; break;
        case '\\': *w++ = '\\'; break;
        case '\b': *w++ = 'b'; break;
        case '\t': *w++ = 't'; break;
        case '\n': *w++ = 'n'; break;
        case '\f': *w++ = 'f'; break;
        case '\r': *w++ = 'r'; break;
        default:
            *w++ = 'u';
            *w++ = '0';
            *w++ = '0';
            *w++ = hex[c >> 4];
            *w++ = hex[c & 15];
        }
    }
    return w;
}

#endif

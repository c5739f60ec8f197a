/*
 * exporters.datadog._ddwire: the datadog exporter's metrics renderer in C (exporters/datadog/metrics.py).
 *
 * `Renderer.render(raw, cuts, offsets, skipped, now, now_s)` walks one serialized
 * ExportMetricsServiceRequest and returns the JSON text of every Datadog series it gives, each
 * followed by a comma (the same bytes, series by series, that MetricsMapper's Python walk writes);
 * it appends to `cuts` how many series were written when each data point's series end, to `offsets`
 * the length of the text then, and counts the points it skips in `skipped` (reason -> count). It
 * returns None, having changed nothing, when the bytes are anything but plain well-formed OTLP (a
 * truncated or malformed field, a wire type that does not match a known field, groups, a metric with
 * two data fields, a scope written twice, invalid UTF-8 in a name): the caller then maps the request
 * with the Python walk, which decides (it raises where the protobuf parser does).
 *
 * What stays in Python is per resource and scope (`scope_of(resource, name, version)` -> the
 * mapper's `_Scope`, and the series tail before and after the point's tags),
 * per metric (`heads_of(name)` -> the series heads of the name), attributes whose value is an array
 * or a map or whose bytes are anything but plain (`tag_of(key_value_bytes)` -> the tag, or the
 * protobuf parser's error), and summary quantiles (`quantiles_of(scope, key, name, timestamp,
 * ((q, value), ...))` -> the JSON of each quantile series; `key` is the data point's attribute fields
 * as they are on the wire). Every other attribute becomes its `key:value` tag here, its value written
 * as pipeline/anyvalue.py's `as_string` does (strings as they are, `true`/`false`, decimal integers,
 * doubles in the shortest form without an exponent, bytes in base64; an empty value is `n/a`), in
 * JSON as orjson escapes it.
 *
 * The cumulative -> delta state lives here: a hash table (Python's randomized bytes hash) of
 * series keys (kind byte, name length as 4 bytes little-endian, name, series tail) with their last
 * start time, time, values and when they were last seen, in least recently updated order, so that
 * TTL expiry and eviction past `max_series` take the oldest first, as the Python mapper's
 * OrderedDict does. `delta(key, start, ts, values, now)` lets the Python walk use the same state.
 * Values keep Python's types: integers are exact (128-bit here), doubles are doubles, and an int
 * compares with a double exactly.
 *
 * The text is written straight into the bytes object returned, and the next request writes into the
 * same object again when the caller has let it go (a request's text is megabytes: a new one each time
 * would be that much memory to fault in and copy). A renderer is used by one thread; a callback that
 * calls back into it gets a RuntimeError.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../../pipeline/_otlpwire.h"

#define NS 1000000000ULL
#define MIN_TS 1000000000ULL
#define MAX_TS 10000000000ULL

/* skip reasons, in MetricsMapper's spelling */
enum { R_NO_VALUE, R_INVALID_VALUE, R_INVALID_TS, R_INVALID_NAME, R_UNSUPPORTED, R_OUT_OF_ORDER, R_INITIAL, R_N };
static const char *REASONS[R_N] = {"no_recorded_value", "invalid_value", "invalid_timestamp", "invalid_name",
                                   "unsupported", "out_of_order", "initial_value"};

typedef const unsigned char *P;

/* -- wire primitives (0 on success, -1 on anything odd) --------------------------------------------- */

static inline int rd_varint(P *pp, P end, uint64_t *v) {
    return ow_varint(*pp, end, pp, v);
}

static inline int rd_tag(P *pp, P end, uint32_t *field, int *wt) {
    return ow_tag(*pp, end, pp, field, wt);
}

/* Reads the value of wire type `wt` at *pp: a varint in *v, 8 or 4 bytes in *v, or a length-delimited
 * value as [*s, *e). Groups and wire types 6, 7 are odd. */
static inline int rd_value(P *pp, P end, int wt, uint64_t *v, P *s, P *e) {
    P p = *pp;
    switch (wt) {
    case 0:
        return rd_varint(pp, end, v);
    case 1:
        if (end - p < 8)
            return -1;
        memcpy(v, p, 8);
        *pp = p + 8;
        return 0;
    case 2:
        if (rd_varint(&p, end, v) < 0 || *v > (uint64_t)(end - p))
            return -1;
        *s = p;
        *e = p + *v;
        *pp = *e;
        return 0;
    case 5:
        if (end - p < 4)
            return -1;
        *v = 0;
        memcpy(v, p, 4);
        *pp = p + 4;
        return 0;
    default:
        return -1;
    }
}

/* The next field of a message pass 1 checked: its number, wire type and value (see rd_value). */
static inline void next_field(P *pp, P end, uint32_t *field, int *wt, uint64_t *v, P *s, P *e) {
    *field = 0;
    *wt = 7;
    *v = 0;
    if (rd_tag(pp, end, field, wt) < 0 || rd_value(pp, end, *wt, v, s, e) < 0)
        *pp = end; /* not reached: the bytes were checked */
}

static inline double as_double(uint64_t v) {
    double d;
    memcpy(&d, &v, 8);
    return d;
}

/* -- pass 1: is the request plain OTLP? ----------------------------------------------------------- */

/* How a known field of a message is checked: its wire type and what is inside. */
enum { K_NONE, K_MSG, K_UTF8, K_PACKED64 };
typedef struct Schema Schema;
typedef struct {
    uint32_t field;
    int wt;
    int kind;
    const Schema *sub;
    int once; /* a singular message: a second one (or a second member of the oneof) is odd */
} FieldRule;
struct Schema {
    int n;
    FieldRule rules[12];
};

static const Schema S_VAQ = {2, {{1, 1, K_NONE, NULL, 0}, {2, 1, K_NONE, NULL, 0}}};
static const Schema S_NDP = {6, {{7, 2, K_NONE, NULL, 0}, {2, 1, K_NONE, NULL, 0}, {3, 1, K_NONE, NULL, 0},
                                 {4, 1, K_NONE, NULL, 0}, {6, 1, K_NONE, NULL, 0}, {8, 0, K_NONE, NULL, 0}}};
static const Schema S_HDP = {10, {{9, 2, K_NONE, NULL, 0}, {2, 1, K_NONE, NULL, 0}, {3, 1, K_NONE, NULL, 0},
                                  {4, 1, K_NONE, NULL, 0}, {5, 1, K_NONE, NULL, 0}, {6, 2, K_PACKED64, NULL, 0},
                                  {7, 2, K_PACKED64, NULL, 0}, {10, 0, K_NONE, NULL, 0}, {11, 1, K_NONE, NULL, 0},
                                  {12, 1, K_NONE, NULL, 0}}};
static const Schema S_EDP = {8, {{1, 2, K_NONE, NULL, 0}, {2, 1, K_NONE, NULL, 0}, {3, 1, K_NONE, NULL, 0},
                                 {4, 1, K_NONE, NULL, 0}, {5, 1, K_NONE, NULL, 0}, {10, 0, K_NONE, NULL, 0},
                                 {12, 1, K_NONE, NULL, 0}, {13, 1, K_NONE, NULL, 0}}};
static const Schema S_SDP = {7, {{7, 2, K_NONE, NULL, 0}, {2, 1, K_NONE, NULL, 0}, {3, 1, K_NONE, NULL, 0},
                                 {4, 1, K_NONE, NULL, 0}, {5, 1, K_NONE, NULL, 0}, {6, 2, K_MSG, &S_VAQ, 0},
                                 {8, 0, K_NONE, NULL, 0}}};
static const Schema S_GAUGE = {1, {{1, 2, K_MSG, &S_NDP, 0}}};
static const Schema S_SUM = {3, {{1, 2, K_MSG, &S_NDP, 0}, {2, 0, K_NONE, NULL, 0}, {3, 0, K_NONE, NULL, 0}}};
static const Schema S_HIST = {2, {{1, 2, K_MSG, &S_HDP, 0}, {2, 0, K_NONE, NULL, 0}}};
static const Schema S_EXPH = {2, {{1, 2, K_MSG, &S_EDP, 0}, {2, 0, K_NONE, NULL, 0}}};
static const Schema S_SUMMARY = {1, {{1, 2, K_MSG, &S_SDP, 0}}};
static const Schema S_METRIC = {6, {{1, 2, K_UTF8, NULL, 0}, {5, 2, K_MSG, &S_GAUGE, 1}, {7, 2, K_MSG, &S_SUM, 1},
                                    {9, 2, K_MSG, &S_HIST, 1}, {10, 2, K_MSG, &S_EXPH, 1},
                                    {11, 2, K_MSG, &S_SUMMARY, 1}}};
static const Schema S_SCOPE = {2, {{1, 2, K_UTF8, NULL, 0}, {2, 2, K_UTF8, NULL, 0}}};
static const Schema S_SM = {2, {{1, 2, K_MSG, &S_SCOPE, 1}, {2, 2, K_MSG, &S_METRIC, 0}}};
static const Schema S_RM = {2, {{1, 2, K_NONE, NULL, 0}, {2, 2, K_MSG, &S_SM, 0}}};
static const Schema S_REQ = {1, {{1, 2, K_MSG, &S_RM, 0}}};

static int plain(const Schema *sc, P p, P end) {
    int seen_once = 0;
    while (p < end) {
        uint32_t field;
        int wt;
        uint64_t v;
        P s = NULL, e = NULL;
        if (rd_tag(&p, end, &field, &wt) < 0 || rd_value(&p, end, wt, &v, &s, &e) < 0)
            return 0;
        for (int i = 0; i < sc->n; i++) {
            const FieldRule *r = &sc->rules[i];
            if (r->field != field)
                continue;
            if (r->kind == K_PACKED64) {
                if (!(wt == 1 || (wt == 2 && (e - s) % 8 == 0)))
                    return 0;
                break;
            }
            if (r->wt != wt)
                return 0;
            if (r->once) {
                if (seen_once)
                    return 0;
                seen_once = 1;
            }
            if (r->kind == K_MSG && !plain(r->sub, s, e))
                return 0;
            if (r->kind == K_UTF8 && !ow_utf8_valid(s, e))
                return 0;
            break;
        }
    }
    return 1;
}

/* -- numbers with Python's types ------------------------------------------------------------------- */

typedef __int128 i128;
typedef struct {
    int is_float;
    double d;
    i128 i;
} Num;

static inline Num num_int(i128 i) {
    Num n = {0, 0.0, i};
    return n;
}
static inline Num num_float(double d) {
    Num n = {1, d, 0};
    return n;
}
static inline double num_as_double(Num a) {
    if (a.is_float)
        return a.d;
    if (a.i >= 0 && a.i <= (i128)UINT64_MAX)
        return (double)(uint64_t)a.i;
    if (a.i < 0 && a.i >= (i128)INT64_MIN)
        return (double)(int64_t)a.i;
    return (double)a.i;
}

/* a < b, exactly (finite doubles; |ints| < 2^64) */
static int num_lt(Num a, Num b) {
    if (!a.is_float && !b.is_float)
        return a.i < b.i;
    if (a.is_float && b.is_float)
        return a.d < b.d;
    int flip = 0;
    i128 i;
    double d;
    if (a.is_float) { /* d < i  <=>  i > d */
        flip = 1;
        i = b.i;
        d = a.d;
    } else {
        i = a.i;
        d = b.d;
    }
    int cmp; /* sign of i - d */
    if (d != d)
        return 0;
    if (d >= 18446744073709551616.0)
        cmp = -1;
    else if (d < -18446744073709551616.0)
        cmp = 1;
    else {
        double fl = floor(d);
        i128 fi = (i128)fl;
        if (i < fi)
            cmp = -1;
        else if (i > fi)
            cmp = 1;
        else
            cmp = d > fl ? -1 : 0;
    }
    return flip ? cmp > 0 : cmp < 0;
}

static inline Num num_sub(Num a, Num b) {
    if (!a.is_float && !b.is_float)
        return num_int(a.i - b.i);
    return num_float(num_as_double(a) - num_as_double(b));
}

static inline int num_finite(Num a) {
    return !a.is_float || isfinite(a.d);
}

static PyObject *num_to_py(Num a) {
    if (a.is_float)
        return PyFloat_FromDouble(a.d);
    if (a.i >= 0 && a.i <= (i128)UINT64_MAX)
        return PyLong_FromUnsignedLongLong((unsigned long long)a.i);
    if (a.i < 0 && a.i >= (i128)INT64_MIN)
        return PyLong_FromLongLong((long long)a.i);
    char buf[48];
    int k = 47;
    buf[k] = 0;
    i128 x = a.i;
    int neg = x < 0;
    do {
        int digit = (int)(x % 10);
        buf[--k] = (char)('0' + (digit < 0 ? -digit : digit));
        x /= 10;
    } while (x);
    if (neg)
        buf[--k] = '-';
    return PyLong_FromString(buf + k, NULL, 10);
}

static int num_from_py(PyObject *o, Num *out) {
    if (PyFloat_Check(o)) {
        *out = num_float(PyFloat_AS_DOUBLE(o));
        return 0;
    }
    if (!PyLong_Check(o)) {
        PyErr_SetString(PyExc_TypeError, "values must be ints or floats");
        return -1;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (!overflow) {
        *out = num_int((i128)v);
        return 0;
    }
    unsigned long long u = PyLong_AsUnsignedLongLong(o);
    if (u == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *out = num_int((i128)u);
    return 0;
}

/* -- the output buffer ---------------------------------------------------------------------------- */

typedef struct {
    char *p;
    Py_ssize_t len, cap;
    PyObject *bytes; /* when set, `p` is this bytes object's storage (only this Buf refers to it) */
} Buf;

static int buf_reserve(Buf *b, Py_ssize_t more) {
    if (b->len + more <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + more)
        cap *= 2;
    if (b->bytes != NULL) {
        if (_PyBytes_Resize(&b->bytes, cap) < 0) { /* it freed the object */
            b->p = NULL;
            b->cap = b->len = 0;
            return -1;
        }
        b->p = PyBytes_AS_STRING(b->bytes);
        b->cap = cap;
        return 0;
    }
    char *p = PyMem_Realloc(b->p, (size_t)cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline int buf_put(Buf *b, const void *s, Py_ssize_t n) {
    if (buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->p + b->len, s, (size_t)n);
    b->len += n;
    return 0;
}

static int buf_u64(Buf *b, uint64_t x) {
    char tmp[24];
    int k = 24;
    do {
        tmp[--k] = (char)('0' + x % 10);
        x /= 10;
    } while (x);
    return buf_put(b, tmp + k, 24 - k);
}

/* A value as Python's `%a` writes an int or a float (finite). */
static int buf_num(Buf *b, Num a) {
    if (a.is_float && a.d > -1e16 && a.d < 1e16 && a.d == (double)(int64_t)a.d && (a.d != 0.0 || !signbit(a.d))) {
        /* an integral double below 1e16: repr writes its digits and `.0` */
        if (buf_num(b, num_int((i128)(int64_t)a.d)) < 0)
            return -1;
        return buf_put(b, ".0", 2);
    }
    if (a.is_float) {
        char *s = PyOS_double_to_string(a.d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
        if (s == NULL)
            return -1;
        int rc = buf_put(b, s, (Py_ssize_t)strlen(s));
        PyMem_Free(s);
        return rc;
    }
    i128 x = a.i;
    if (x < 0) {
        if (buf_put(b, "-", 1) < 0)
            return -1;
        x = -x;
    }
    char tmp[48];
    int k = 48;
    do {
        tmp[--k] = (char)('0' + (int)(x % 10));
        x /= 10;
    } while (x);
    return buf_put(b, tmp + k, 48 - k);
}

/* -- the cumulative state ------------------------------------------------------------------------- */

typedef struct Entry {
    struct Entry *older, *newer; /* least recently updated first */
    struct Entry *chain;
    Py_hash_t hash;
    uint64_t start, ts;
    double seen;
    int nvals;
    Num *vals;
    Py_ssize_t klen;
    char key[];
} Entry;

typedef struct {
    Entry **slots;
    size_t mask; /* slots - 1 (a power of two) */
    Py_ssize_t count;
    Entry *oldest, *newest;
} Table;

static Entry **tbl_find(Table *t, Py_hash_t h, const char *key, Py_ssize_t klen) {
    Entry **pe = &t->slots[(size_t)h & t->mask];
    while (*pe != NULL) {
        Entry *e = *pe;
        if (e->hash == h && e->klen == klen && memcmp(e->key, key, (size_t)klen) == 0)
            return pe;
        pe = &e->chain;
    }
    return pe;
}

static void lru_unlink(Table *t, Entry *e) {
    if (e->older)
        e->older->newer = e->newer;
    else
        t->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        t->newest = e->older;
    e->older = e->newer = NULL;
}

static void lru_append(Table *t, Entry *e) {
    e->older = t->newest;
    e->newer = NULL;
    if (t->newest)
        t->newest->newer = e;
    else
        t->oldest = e;
    t->newest = e;
}

static void tbl_remove(Table *t, Entry *e) {
    Entry **pe = tbl_find(t, e->hash, e->key, e->klen);
    *pe = e->chain;
    lru_unlink(t, e);
    t->count--;
    PyMem_Free(e->vals);
    PyMem_Free(e);
}

static int tbl_grow(Table *t) {
    size_t n = (t->mask + 1) * 2;
    Entry **slots = PyMem_Calloc(n, sizeof(Entry *));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i <= t->mask; i++) {
        Entry *e = t->slots[i];
        while (e) {
            Entry *next = e->chain;
            e->chain = slots[(size_t)e->hash & (n - 1)];
            slots[(size_t)e->hash & (n - 1)] = e;
            e = next;
        }
    }
    PyMem_Free(t->slots);
    t->slots = slots;
    t->mask = n - 1;
    return 0;
}

/* -- the renderer object ---------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *scope_of, *heads_of, *tag_of, *quantiles_of;
    int to_delta, initial, aggregations, quantiles; /* initial: 0 auto, 1 drop, 2 keep */
    uint64_t started_ns;
    Py_ssize_t max_series;
    Py_ssize_t evicted;
    int busy; /* inside render: the Python it calls back must not come back into the renderer */
    PyObject *text; /* the bytes object `render` returned last, written again when nobody else holds it */
    Py_ssize_t text_cap;
    Table t;
    Buf out, key, tail;
} Renderer;

enum { DELTA_ERROR = -1, DELTA_OUT_OF_ORDER = 0, DELTA_FIRST = 1, DELTA_OK = 2 };

/* MetricsMapper._delta without its `_first`: the increase of a series since its previous point in `out`. */
static int st_update(Renderer *r, const char *key, Py_ssize_t klen, uint64_t start, uint64_t ts, const Num *vals,
                     int n, double now, Num *out) {
    Table *t = &r->t;
    Py_hash_t h = _Py_HashBytes(key, klen);
    Entry **pe = tbl_find(t, h, key, klen);
    Entry *e = *pe;
    if (e == NULL) {
        if (t->count >= r->max_series && t->oldest != NULL) {
            tbl_remove(t, t->oldest);
            r->evicted++;
            pe = tbl_find(t, h, key, klen);
        }
        e = PyMem_Malloc(sizeof(Entry) + (size_t)klen);
        Num *v = PyMem_Malloc(sizeof(Num) * (size_t)(n ? n : 1));
        if (e == NULL || v == NULL) {
            PyMem_Free(e);
            PyMem_Free(v);
            PyErr_NoMemory();
            return DELTA_ERROR;
        }
        memcpy(e->key, key, (size_t)klen);
        e->klen = klen;
        e->hash = h;
        e->chain = NULL;
        e->start = start;
        e->ts = ts;
        e->seen = now;
        e->nvals = n;
        e->vals = v;
        memcpy(v, vals, sizeof(Num) * (size_t)n);
        *pe = e;
        lru_append(t, e);
        t->count++;
        if ((size_t)t->count > t->mask + 1 && tbl_grow(t) < 0)
            return DELTA_ERROR;
        return DELTA_FIRST;
    }
    if (ts <= e->ts)
        return DELTA_OUT_OF_ORDER;
    uint64_t prev_start = e->start;
    int reset = (start && (start == ts || start != prev_start)) || n != e->nvals || (n > 0 && num_lt(vals[0], e->vals[0]));
    for (int i = 2; !reset && i < n; i++)
        reset = num_lt(vals[i], e->vals[i]);
    if (!reset)
        for (int i = 0; i < n; i++)
            out[i] = num_sub(vals[i], e->vals[i]);
    if (n != e->nvals) {
        Num *v = PyMem_Realloc(e->vals, sizeof(Num) * (size_t)(n ? n : 1));
        if (v == NULL) {
            PyErr_NoMemory();
            return DELTA_ERROR;
        }
        e->vals = v;
        e->nvals = n;
    }
    memcpy(e->vals, vals, sizeof(Num) * (size_t)n);
    e->start = start;
    e->ts = ts;
    e->seen = now;
    lru_unlink(t, e);
    lru_append(t, e);
    return reset ? DELTA_FIRST : DELTA_OK;
}

/* MetricsMapper._first: whether the first point of a series (or after a reset) is reported whole. */
static inline int first_reported(Renderer *r, uint64_t start, uint64_t ts) {
    return r->initial == 2 || (r->initial == 0 && start && start != ts && start > r->started_ns);
}

/* -- pass 2: the walk ----------------------------------------------------------------------------- */

typedef struct {
    Renderer *r;
    PyObject *cuts, *offsets;
    Py_ssize_t nseries; /* series written so far */
    Py_ssize_t skipped[R_N];
    double now;
    uint64_t now_s;
    PyObject *scope;    /* the mapper's _Scope of the current resource and scope */
    PyObject *tags_head, *tags_end; /* its series tail before and after the point's tags (bytes) */
    int has_base;                   /* whether tags_head ends with a tag already */
    PyObject *heads;    /* the heads tuple of the current metric */
    PyObject *name;     /* the current metric name (str) */
    const char *name_p; /* its UTF-8 bytes */
    Py_ssize_t name_len;
} Walk;

typedef struct {
    P attrs_s, attrs_e; /* from the first attribute field to the end of the last one */
    int attrs_gaps;     /* other fields between them */
    P pt_s, pt_e;       /* the data point (to collect the attribute fields when they have gaps) */
    uint32_t attr_field;
    uint64_t start, ts, count, flags;
    int value_kind; /* 0 none, 1 as_double, 2 as_int (the last of the oneof on the wire) */
    uint64_t value;
    int has_sum, has_min, has_max;
    double sum, min, max;
} Point;

static void read_point(P p, P end, uint32_t attr_field, int optional_sum, Point *pt) {
    memset(pt, 0, sizeof(*pt));
    pt->pt_s = p;
    pt->pt_e = end;
    pt->attr_field = attr_field;
    P last_end = NULL;
    while (p < end) {
        uint32_t field;
        int wt;
        uint64_t v = 0;
        P fs = p, s = NULL, e = NULL;
        next_field(&p, end, &field, &wt, &v, &s, &e); /* pass 1 checked every byte */
        if (field == attr_field && wt == 2) {
            if (pt->attrs_s == NULL)
                pt->attrs_s = fs;
            else if (last_end != fs)
                pt->attrs_gaps = 1;
            last_end = p;
            pt->attrs_e = p;
            continue;
        }
        switch (field) {
        case 2:
            pt->start = v;
            break;
        case 3:
            pt->ts = v;
            break;
        case 4: /* as_double (number) or count */
            if (attr_field == 7 && optional_sum < 0) {
                pt->value_kind = 1;
                pt->value = v;
            } else {
                pt->count = v;
            }
            break;
        case 5:
            if (optional_sum >= 0) { /* histogram / summary sum */
                pt->has_sum = 1;
                pt->sum = as_double(v);
            }
            break;
        case 6:
            if (optional_sum < 0) { /* number: as_int */
                pt->value_kind = 2;
                pt->value = v;
            }
            break;
        case 8:
            if (attr_field == 7)
                pt->flags = v;
            break;
        case 10:
            if (attr_field != 7)
                pt->flags = v;
            break;
        case 11:
            if (attr_field == 9) {
                pt->has_min = 1;
                pt->min = as_double(v);
            }
            break;
        case 12:
            if (attr_field == 9) {
                pt->has_max = 1;
                pt->max = as_double(v);
            } else if (attr_field == 1) {
                pt->has_min = 1;
                pt->min = as_double(v);
            }
            break;
        case 13:
            if (attr_field == 1) {
                pt->has_max = 1;
                pt->max = as_double(v);
            }
            break;
        default:
            break;
        }
    }
}

/* The point's attribute fields as one bytes object (the key of its tail). */
static PyObject *attrs_key(const Point *pt) {
    if (pt->attrs_s == NULL)
        return PyBytes_FromStringAndSize(NULL, 0);
    if (!pt->attrs_gaps)
        return PyBytes_FromStringAndSize((const char *)pt->attrs_s, pt->attrs_e - pt->attrs_s);
    Py_ssize_t n = 0;
    for (int pass = 0; pass < 2; pass++) {
        PyObject *out = pass ? PyBytes_FromStringAndSize(NULL, n) : NULL;
        if (pass && out == NULL)
            return NULL;
        char *w = pass ? PyBytes_AS_STRING(out) : NULL;
        P p = pt->pt_s;
        while (p < pt->pt_e) {
            uint32_t field;
            int wt;
            uint64_t v;
            P fs = p, s = NULL, e = NULL;
            next_field(&p, pt->pt_e, &field, &wt, &v, &s, &e);
            if (field == pt->attr_field && wt == 2) {
                if (pass) {
                    memcpy(w, fs, (size_t)(p - fs));
                    w += p - fs;
                } else {
                    n += p - fs;
                }
            }
        }
        if (pass)
            return out;
    }
    return NULL;
}

/* -- attributes as tags ------------------------------------------------------------------------------ */

/* A JSON string's contents as orjson escapes them. */
static int buf_json(Buf *b, const char *s, Py_ssize_t n) {
    if (buf_reserve(b, n * 6) < 0)
        return -1;
    b->len = ow_json_escape(b->p + b->len, (const unsigned char *)s, (size_t)n) - b->p;
    return 0;
}

static int buf_base64(Buf *b, P s, P e) {
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    Py_ssize_t n = e - s;
    if (buf_reserve(b, (n + 2) / 3 * 4) < 0)
        return -1;
    char *w = b->p + b->len;
    for (; e - s >= 3; s += 3) {
        uint32_t v = (uint32_t)s[0] << 16 | (uint32_t)s[1] << 8 | s[2];
        *w++ = abc[v >> 18];
        *w++ = abc[(v >> 12) & 63];
        *w++ = abc[(v >> 6) & 63];
        *w++ = abc[v & 63];
    }
    if (e - s == 1) {
        uint32_t v = (uint32_t)s[0] << 16;
        *w++ = abc[v >> 18];
        *w++ = abc[(v >> 12) & 63];
        *w++ = '=';
        *w++ = '=';
    } else if (e - s == 2) {
        uint32_t v = (uint32_t)s[0] << 16 | (uint32_t)s[1] << 8;
        *w++ = abc[v >> 18];
        *w++ = abc[(v >> 12) & 63];
        *w++ = abc[(v >> 6) & 63];
        *w++ = '=';
    }
    b->len = w - b->p;
    return 0;
}

/* pipeline.anyvalue.float_text: the shortest digits that read back as x, never with an exponent. */
static int buf_float_text(Buf *b, double x) {
    if (x != x)
        return buf_put(b, "NaN", 3);
    if (isinf(x))
        return buf_put(b, x > 0 ? "+Inf" : "-Inf", 4);
    char *r = PyOS_double_to_string(x, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (r == NULL)
        return -1;
    int rc;
    char *exp = strchr(r, 'e');
    Py_ssize_t len = (Py_ssize_t)strlen(r);
    if (exp == NULL) {
        if (len >= 2 && r[len - 2] == '.' && r[len - 1] == '0')
            len -= 2;
        rc = buf_put(b, r, len);
    } else { /* [-]d[.ddd]e(+|-)NN: the digits, then where the point goes */
        char digits[32];
        long nd = 0;
        int neg = r[0] == '-';
        for (char *c = r + neg; c < exp && nd < 31; c++)
            if (*c >= '0' && *c <= '9')
                digits[nd++] = *c;
        long point = 1 + strtol(exp + 1, NULL, 10); /* digits before the decimal point */
        rc = neg ? buf_put(b, "-", 1) : 0;
        if (rc == 0 && point <= 0) {
            rc = buf_put(b, "0.", 2);
            for (long i = 0; rc == 0 && i < -point; i++)
                rc = buf_put(b, "0", 1);
            if (rc == 0)
                rc = buf_put(b, digits, nd);
        } else if (rc == 0 && point >= nd) {
            rc = buf_put(b, digits, nd);
            for (long i = nd; rc == 0 && i < point; i++)
                rc = buf_put(b, "0", 1);
        } else if (rc == 0) {
            rc = buf_put(b, digits, point);
            if (rc == 0)
                rc = buf_put(b, ".", 1);
            if (rc == 0)
                rc = buf_put(b, digits + point, nd - point);
        }
    }
    PyMem_Free(r);
    return rc;
}

/* Writes the tag of one attribute (a KeyValue's bytes) as a JSON string: 0, or 1 when it is not plain
 * (an array or map value, a field written twice, a wire type that does not match, invalid UTF-8): ask
 * Python. */
static int render_tag(Buf *b, P s, P e) {
    P key_s = NULL, key_e = NULL, val_s = NULL, val_e = NULL;
    int nkey = 0, nval = 0;
    while (s < e) {
        uint32_t field;
        int wt;
        uint64_t v;
        P fs = NULL, fe = NULL;
        if (rd_tag(&s, e, &field, &wt) < 0 || rd_value(&s, e, wt, &v, &fs, &fe) < 0)
            return 1;
        if (field == 1 || field == 2) {
            if (wt != 2)
                return 1;
            if (field == 1) {
                key_s = fs;
                key_e = fe;
                nkey++;
            } else {
                val_s = fs;
                val_e = fe;
                nval++;
            }
        }
    }
    if (nkey > 1 || nval > 1 || (key_s != NULL && !ow_utf8_valid(key_s, key_e)))
        return 1;
    static const int WT[8] = {0, 2, 0, 0, 1, 2, 2, 2};
    int kind = 0; /* the AnyValue field set */
    uint64_t num = 0;
    P str_s = NULL, str_e = NULL;
    while (val_s != NULL && val_s < val_e) {
        uint32_t field;
        int wt;
        uint64_t v = 0;
        P fs = NULL, fe = NULL;
        if (rd_tag(&val_s, val_e, &field, &wt) < 0 || rd_value(&val_s, val_e, wt, &v, &fs, &fe) < 0)
            return 1;
        if (field < 1 || field > 7)
            continue;
        if (kind || wt != WT[field] || field == 5 || field == 6)
            return 1;
        kind = (int)field;
        num = v;
        str_s = fs;
        str_e = fe;
    }
    if (kind == 1 && !ow_utf8_valid(str_s, str_e))
        return 1;
    Py_ssize_t mark = b->len;
    if (buf_put(b, "\"", 1) < 0 || (key_s && buf_json(b, (const char *)key_s, key_e - key_s) < 0) ||
        buf_put(b, ":", 1) < 0)
        return -1;
    Py_ssize_t at = b->len;
    int rc = 0;
    switch (kind) {
    case 1:
        rc = buf_json(b, (const char *)str_s, str_e - str_s);
        break;
    case 2:
        rc = num ? buf_put(b, "true", 4) : buf_put(b, "false", 5);
        break;
    case 3:
        rc = buf_num(b, num_int((i128)(int64_t)num));
        break;
    case 4:
        rc = buf_float_text(b, as_double(num));
        break;
    case 7:
        rc = buf_base64(b, str_s, str_e);
        break;
    default:
        break;
    }
    if (rc == 0 && b->len == at)
        rc = buf_put(b, "n/a", 3);
    if (rc == 0)
        rc = buf_put(b, "\"", 1);
    if (rc < 0)
        b->len = mark;
    return rc;
}

/* A tag from Python (`tag_of`), as a JSON string. */
static int python_tag(Walk *w, Buf *b, P s, P e) {
    PyObject *raw = PyBytes_FromStringAndSize((const char *)s, e - s);
    PyObject *tag = raw ? PyObject_CallOneArg(w->r->tag_of, raw) : NULL;
    Py_XDECREF(raw);
    if (tag == NULL)
        return -1;
    Py_ssize_t n = 0;
    const char *t = PyUnicode_Check(tag) ? PyUnicode_AsUTF8AndSize(tag, &n) : NULL;
    if (t == NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_TypeError, "tag_of must return a str");
    int rc = t == NULL || buf_put(b, "\"", 1) < 0 || buf_json(b, t, n) < 0 || buf_put(b, "\"", 1) < 0 ? -1 : 0;
    Py_DECREF(tag);
    return rc;
}

/* The series tail of a point, in the renderer's `tail` buffer:
 * `}],"tags":[<scope's tags>,<the point's>],"resources":[...]}`. */
static int tail_of(Walk *w, const Point *pt) {
    Buf *b = &w->r->tail;
    b->len = 0;
    if (buf_put(b, PyBytes_AS_STRING(w->tags_head), PyBytes_GET_SIZE(w->tags_head)) < 0)
        return -1;
    int first = !w->has_base;
    P p = pt->pt_s;
    while (pt->attrs_s != NULL && p < pt->pt_e) {
        uint32_t field;
        int wt;
        uint64_t v;
        P s = NULL, e = NULL;
        next_field(&p, pt->pt_e, &field, &wt, &v, &s, &e);
        if (field != pt->attr_field || wt != 2)
            continue;
        if (!first && buf_put(b, ",", 1) < 0)
            return -1;
        first = 0;
        int rc = render_tag(b, s, e);
        if (rc == 1)
            rc = python_tag(w, b, s, e);
        if (rc < 0)
            return -1;
    }
    if (buf_put(b, PyBytes_AS_STRING(w->tags_end), PyBytes_GET_SIZE(w->tags_end)) < 0)
        return -1;
    return 0;
}

static inline void skip(Walk *w, int reason, Py_ssize_t n) {
    w->skipped[reason] += n;
}

/* Writes head + timestamp + `,"value":` + value + the point's tail + `,` to the output. */
static int emit(Walk *w, int head, uint64_t point_ts, Num value) {
    Buf *b = &w->r->out, *tail = &w->r->tail;
    PyObject *h = PyTuple_GET_ITEM(w->heads, head);
    if (buf_put(b, PyBytes_AS_STRING(h), PyBytes_GET_SIZE(h)) < 0 || buf_u64(b, point_ts) < 0 ||
        buf_put(b, ",\"value\":", 9) < 0 || buf_num(b, value) < 0 || buf_put(b, tail->p, tail->len) < 0 ||
        buf_put(b, ",", 1) < 0)
        return -1;
    w->nseries++;
    return 0;
}

/* The end of a data point's series: their count so far in `cuts`, the output's length in `offsets`. */
static int cut(Walk *w) {
    PyObject *n = PyLong_FromSsize_t(w->nseries);
    PyObject *at = n ? PyLong_FromSsize_t(w->r->out.len) : NULL;
    int rc = at == NULL || PyList_Append(w->cuts, n) < 0 || PyList_Append(w->offsets, at) < 0 ? -1 : 0;
    Py_XDECREF(n);
    Py_XDECREF(at);
    return rc;
}

/* The state key of a series: kind, name length (4 bytes little-endian), name, tail. */
static int state_key(Walk *w, char kind) {
    Buf *k = &w->r->key;
    k->len = 0;
    unsigned char len4[4] = {(unsigned char)(w->name_len & 0xFF), (unsigned char)((w->name_len >> 8) & 0xFF),
                             (unsigned char)((w->name_len >> 16) & 0xFF), (unsigned char)((w->name_len >> 24) & 0xFF)};
    if (buf_put(k, &kind, 1) < 0 || buf_put(k, len4, 4) < 0 || buf_put(k, w->name_p, w->name_len) < 0 ||
        buf_put(k, w->r->tail.p, w->r->tail.len) < 0)
        return -1;
    return 0;
}

static inline uint64_t point_time(Walk *w, uint64_t ts) {
    uint64_t s = ts / NS;
    return s ? s : w->now_s;
}

/* Heads: 0 gauge, 1 count, 2 .count, 3 .sum, 4 .avg, 5 .min, 6 .max */

/* The deltas of a cumulative point's `n` values against its series' state (`kind` keys the state: 's' sums,
 * 'h' histograms), in out[]: 1 when they are to be sent, 0 when the point is skipped (counted here: out of
 * order, or the first point of a series whose start is not known to be its first), -1 on a Python error. */
static int cumulative_delta(Walk *w, char kind, const Point *pt, const Num *vals, int n, Num *out) {
    int rc = state_key(w, kind) < 0 ? DELTA_ERROR
             : st_update(w->r, w->r->key.p, w->r->key.len, pt->start, pt->ts, vals, n, w->now, out);
    if (rc == DELTA_ERROR)
        return -1;
    if (rc == DELTA_OUT_OF_ORDER) {
        skip(w, R_OUT_OF_ORDER, 1);
        return 0;
    }
    if (rc == DELTA_FIRST) {
        if (!first_reported(w->r, pt->start, pt->ts)) {
            skip(w, R_INITIAL, 1);
            return 0;
        }
        for (int i = 0; i < n; i++)
            out[i] = vals[i];
    }
    return 1;
}

static int numbers(Walk *w, P s, P e, int kind_count, int monotonic) {
    while (s < e) {
        uint32_t field;
        int wt;
        uint64_t v;
        P ps = NULL, pe = NULL;
        next_field(&s, e, &field, &wt, &v, &ps, &pe);
        if (field != 1)
            continue;
        Point pt;
        read_point(ps, pe, 7, -1, &pt);
        if (pt.flags & 1) {
            skip(w, R_NO_VALUE, 1);
            continue;
        }
        Num val;
        if (pt.value_kind == 2 && pt.value != 0)
            val = num_int((i128)(int64_t)pt.value);
        else
            val = num_float(pt.value_kind == 1 ? as_double(pt.value) : 0.0);
        if (!num_finite(val)) {
            skip(w, R_INVALID_VALUE, 1);
            continue;
        }
        uint64_t point_ts = point_time(w, pt.ts);
        if (point_ts < MIN_TS || point_ts >= MAX_TS) {
            skip(w, R_INVALID_TS, 1);
            continue;
        }
        if (tail_of(w, &pt) < 0)
            return -1;
        if (monotonic) {
            Num d;
            int sent = cumulative_delta(w, 's', &pt, &val, 1, &d);
            if (sent < 0)
                return -1;
            if (sent == 0)
                continue;
            if (!num_finite(d)) {
                skip(w, R_INVALID_VALUE, 1);
                continue;
            }
            val = d;
        }
        int rc = emit(w, kind_count, point_ts, val);
        if (rc < 0 || cut(w) < 0)
            return -1;
    }
    return 0;
}

static int histograms(Walk *w, P s, P e, int cumulative, int exponential) {
    int aggregations = w->r->aggregations;
    while (s < e) {
        uint32_t field;
        int wt;
        uint64_t v;
        P ps = NULL, pe = NULL;
        next_field(&s, e, &field, &wt, &v, &ps, &pe);
        if (field != 1)
            continue;
        Point pt;
        read_point(ps, pe, exponential ? 1 : 9, 1, &pt);
        if (pt.flags & 1) {
            skip(w, R_NO_VALUE, 1);
            continue;
        }
        uint64_t point_ts = point_time(w, pt.ts);
        if (point_ts < MIN_TS || point_ts >= MAX_TS) {
            skip(w, R_INVALID_TS, 1);
            continue;
        }
        if (tail_of(w, &pt) < 0)
            return -1;
        Num count = num_int((i128)pt.count);
        int has_total = pt.has_sum && isfinite(pt.sum);
        Num total = num_float(pt.sum);
        int has_low = 0, has_high = 0;
        if (cumulative) {
            /* `total or 0.0`: no sum, and -0.0, are 0.0 */
            Num vals[2] = {count, num_float(has_total && pt.sum != 0.0 ? pt.sum : 0.0)};
            Num d[2];
            int sent = cumulative_delta(w, 'h', &pt, vals, 2, d);
            if (sent < 0)
                return -1;
            if (sent == 0)
                continue;
            count = d[0];
            has_total = has_total && num_finite(d[1]);
            total = d[1];
        } else {
            has_low = pt.has_min;
            has_high = pt.has_max;
        }
        int nonzero = count.is_float ? count.d != 0.0 : count.i != 0;
        int rc = 0;
        if (aggregations) {
            rc = emit(w, 2, point_ts, count);
            if (rc == 0 && has_total) {
                rc = emit(w, 3, point_ts, total);
                if (rc == 0 && nonzero)
                    rc = emit(w, 4, point_ts, num_float(num_as_double(total) / num_as_double(count)));
            }
            if (rc == 0 && has_low && nonzero && isfinite(pt.min))
                rc = emit(w, 5, point_ts, num_float(pt.min));
            if (rc == 0 && has_high && nonzero && isfinite(pt.max))
                rc = emit(w, 6, point_ts, num_float(pt.max));
        }
        if (rc < 0 || cut(w) < 0)
            return -1;
    }
    return 0;
}

static PyObject *quantile_pairs(const Point *pt) {
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    P p = pt->pt_s;
    while (p < pt->pt_e) {
        uint32_t field;
        int wt;
        uint64_t v;
        P s = NULL, e = NULL;
        next_field(&p, pt->pt_e, &field, &wt, &v, &s, &e);
        if (field != 6)
            continue;
        double q = 0.0, value = 0.0;
        while (s < e) {
            uint32_t f2;
            int wt2;
            uint64_t v2;
            P s2 = NULL, e2 = NULL;
            next_field(&s, e, &f2, &wt2, &v2, &s2, &e2);
            if (f2 == 1)
                q = as_double(v2);
            else if (f2 == 2)
                value = as_double(v2);
        }
        PyObject *pair = Py_BuildValue("(dd)", q, value);
        if (pair == NULL || PyList_Append(out, pair) < 0) {
            Py_XDECREF(pair);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(pair);
    }
    return out;
}

static int summaries(Walk *w, P s, P e) {
    while (s < e) {
        uint32_t field;
        int wt;
        uint64_t v;
        P ps = NULL, pe = NULL;
        next_field(&s, e, &field, &wt, &v, &ps, &pe);
        if (field != 1)
            continue;
        Point pt;
        read_point(ps, pe, 7, 1, &pt);
        if (pt.flags & 1) {
            skip(w, R_NO_VALUE, 1);
            continue;
        }
        uint64_t point_ts = point_time(w, pt.ts);
        if (point_ts < MIN_TS || point_ts >= MAX_TS) {
            skip(w, R_INVALID_TS, 1);
            continue;
        }
        PyObject *key = tail_of(w, &pt) < 0 ? NULL : attrs_key(&pt);
        if (key == NULL)
            return -1;
        Py_ssize_t n0 = w->nseries;
        int finite = isfinite(pt.sum);
        Num vals[2] = {num_int((i128)pt.count), num_float(finite ? pt.sum : 0.0)};
        Num d[2];
        int no_delta = -1;
        int rc = state_key(w, 'q') < 0 ? DELTA_ERROR
                 : st_update(w->r, w->r->key.p, w->r->key.len, pt.start, pt.ts, vals, 2, w->now, d);
        if (rc == DELTA_OUT_OF_ORDER) {
            no_delta = R_OUT_OF_ORDER;
        } else if (rc == DELTA_FIRST) {
            if (first_reported(w->r, pt.start, pt.ts)) {
                d[0] = vals[0];
                d[1] = vals[1];
            } else {
                no_delta = R_INITIAL;
            }
        }
        if (rc != DELTA_ERROR && no_delta < 0) {
            rc = emit(w, 2, point_ts, d[0]);
            if (rc == 0 && finite && num_finite(d[1]))
                rc = emit(w, 3, point_ts, d[1]);
        }
        if (rc >= 0 && w->r->quantiles) {
            PyObject *pairs = quantile_pairs(&pt);
            PyObject *ts = pairs ? PyLong_FromUnsignedLongLong(point_ts) : NULL;
            PyObject *res = ts ? PyObject_CallFunctionObjArgs(w->r->quantiles_of, w->scope, key, w->name, ts, pairs,
                                                              NULL)
                               : NULL;
            Py_XDECREF(pairs);
            Py_XDECREF(ts);
            if (res != NULL && !PyList_Check(res)) {
                Py_CLEAR(res);
                PyErr_SetString(PyExc_TypeError, "quantiles_of must return a list of bytes");
            }
            for (Py_ssize_t i = 0; res != NULL && i < PyList_GET_SIZE(res); i++) {
                PyObject *one = PyList_GET_ITEM(res, i);
                if (!PyBytes_Check(one)) {
                    Py_CLEAR(res);
                    PyErr_SetString(PyExc_TypeError, "quantiles_of must return a list of bytes");
                } else if (buf_put(&w->r->out, PyBytes_AS_STRING(one), PyBytes_GET_SIZE(one)) < 0 ||
                           buf_put(&w->r->out, ",", 1) < 0) {
                    Py_CLEAR(res);
                } else {
                    w->nseries++;
                }
            }
            if (res == NULL)
                rc = -1;
            Py_XDECREF(res);
        }
        Py_DECREF(key);
        if (rc < 0)
            return -1;
        if (w->nseries > n0) {
            if (cut(w) < 0)
                return -1;
        } else if (no_delta >= 0) {
            skip(w, no_delta, 1);
        }
    }
    return 0;
}

static Py_ssize_t count_points(P s, P e) {
    Py_ssize_t n = 0;
    while (s < e) {
        uint32_t field;
        int wt;
        uint64_t v;
        P ps = NULL, pe = NULL;
        next_field(&s, e, &field, &wt, &v, &ps, &pe);
        n += field == 1 && wt == 2;
    }
    return n;
}

/* aggregation_temporality (an int32 on the wire) and is_monotonic of a data field */
static void data_info(P s, P e, int32_t *temporality, int *monotonic) {
    *temporality = 0;
    *monotonic = 0;
    while (s < e) {
        uint32_t field;
        int wt;
        uint64_t v = 0;
        P ps = NULL, pe = NULL;
        next_field(&s, e, &field, &wt, &v, &ps, &pe);
        if (field == 2 && wt == 0)
            *temporality = (int32_t)(uint32_t)v;
        else if (field == 3 && wt == 0)
            *monotonic = v != 0;
    }
}

static int metric(Walk *w, P p, P end) {
    P name_s = NULL, name_e = NULL, data_s = NULL, data_e = NULL;
    uint32_t kind = 0;
    while (p < end) {
        uint32_t field;
        int wt;
        uint64_t v;
        P s = NULL, e = NULL;
        next_field(&p, end, &field, &wt, &v, &s, &e);
        if (field == 1) {
            name_s = s;
            name_e = e;
        } else if (field == 5 || field == 7 || field == 9 || field == 10 || field == 11) {
            kind = field;
            data_s = s;
            data_e = e;
        }
    }
    if (name_s == NULL || name_s == name_e) {
        if (kind)
            skip(w, R_INVALID_NAME, count_points(data_s, data_e));
        return 0;
    }
    if (!kind)
        return 0;
    PyObject *name = PyUnicode_DecodeUTF8((const char *)name_s, name_e - name_s, NULL);
    if (name == NULL)
        return -1;
    PyObject *heads = PyObject_CallOneArg(w->r->heads_of, name);
    if (heads != NULL && (!PyTuple_Check(heads) || PyTuple_GET_SIZE(heads) != 7)) {
        Py_DECREF(heads);
        heads = NULL;
        PyErr_SetString(PyExc_TypeError, "heads_of must return a tuple of 7 bytes");
    }
    if (heads == NULL) {
        Py_DECREF(name);
        return -1;
    }
    for (int i = 0; i < 7; i++)
        if (!PyBytes_Check(PyTuple_GET_ITEM(heads, i))) {
            Py_DECREF(heads);
            Py_DECREF(name);
            PyErr_SetString(PyExc_TypeError, "heads_of must return a tuple of 7 bytes");
            return -1;
        }
    w->name = name;
    w->heads = heads;
    w->name_p = (const char *)name_s;
    w->name_len = name_e - name_s;
    int32_t temporality;
    int monotonic;
    data_info(data_s, data_e, &temporality, &monotonic);
    int rc = 0;
    if (kind == 5) {
        rc = numbers(w, data_s, data_e, 0, 0);
    } else if (kind == 7) {
        if (temporality == 1)
            rc = numbers(w, data_s, data_e, 1, 0);
        else if (temporality != 2)
            skip(w, R_UNSUPPORTED, count_points(data_s, data_e));
        else if (monotonic && w->r->to_delta)
            rc = numbers(w, data_s, data_e, 1, 1);
        else
            rc = numbers(w, data_s, data_e, 0, 0);
    } else if (kind == 9 || kind == 10) {
        if (temporality != 1 && temporality != 2)
            skip(w, R_UNSUPPORTED, count_points(data_s, data_e));
        else
            rc = histograms(w, data_s, data_e, temporality == 2, kind == 10);
    } else {
        rc = summaries(w, data_s, data_e);
    }
    w->name = w->heads = NULL;
    Py_DECREF(heads);
    Py_DECREF(name);
    return rc;
}

static int scope_metrics(Walk *w, PyObject *resource, P p, P end) {
    P scope_s = NULL, scope_e = NULL;
    P name_s = NULL, name_e = NULL, version_s = NULL, version_e = NULL;
    for (P q = p; q < end;) {
        uint32_t field;
        int wt;
        uint64_t v;
        P s = NULL, e = NULL;
        next_field(&q, end, &field, &wt, &v, &s, &e);
        if (field == 1) {
            scope_s = s;
            scope_e = e;
        }
    }
    while (scope_s != NULL && scope_s < scope_e) {
        uint32_t field;
        int wt;
        uint64_t v;
        P s = NULL, e = NULL;
        next_field(&scope_s, scope_e, &field, &wt, &v, &s, &e);
        if (field == 1) {
            name_s = s;
            name_e = e;
        } else if (field == 2) {
            version_s = s;
            version_e = e;
        }
    }
    PyObject *name = PyUnicode_DecodeUTF8((const char *)name_s, name_s ? name_e - name_s : 0, NULL);
    PyObject *version = name ? PyUnicode_DecodeUTF8((const char *)version_s, version_s ? version_e - version_s : 0,
                                                    NULL)
                             : NULL;
    PyObject *got = version ? PyObject_CallFunctionObjArgs(w->r->scope_of, resource, name, version, NULL) : NULL;
    Py_XDECREF(name);
    Py_XDECREF(version);
    if (got == NULL)
        return -1;
    if (!PyTuple_Check(got) || PyTuple_GET_SIZE(got) != 3 || !PyBytes_Check(PyTuple_GET_ITEM(got, 1)) ||
        !PyBytes_Check(PyTuple_GET_ITEM(got, 2)) || PyBytes_GET_SIZE(PyTuple_GET_ITEM(got, 1)) < 11) {
        Py_DECREF(got);
        PyErr_SetString(PyExc_TypeError, "scope_of must return (scope, tags_head bytes, tags_end bytes)");
        return -1;
    }
    PyObject *sc = PyTuple_GET_ITEM(got, 0), *head = PyTuple_GET_ITEM(got, 1), *tags_end = PyTuple_GET_ITEM(got, 2);
    Py_INCREF(sc);
    Py_INCREF(head);
    Py_INCREF(tags_end);
    Py_DECREF(got);
    w->scope = sc;
    w->tags_head = head;
    w->tags_end = tags_end;
    w->has_base = PyBytes_GET_SIZE(head) > 11; /* more than `}],"tags":[` */
    int rc = 0;
    while (rc == 0 && p < end) {
        uint32_t field;
        int wt;
        uint64_t v;
        P s = NULL, e = NULL;
        next_field(&p, end, &field, &wt, &v, &s, &e);
        if (field == 2)
            rc = metric(w, s, e);
    }
    w->scope = w->tags_head = w->tags_end = NULL;
    Py_DECREF(head);
    Py_DECREF(tags_end);
    Py_DECREF(sc);
    return rc;
}

static int resource_metrics(Walk *w, P p, P end) {
    P res_s = NULL, res_e = NULL;
    for (P q = p; q < end;) {
        uint32_t field;
        int wt;
        uint64_t v;
        P s = NULL, e = NULL;
        next_field(&q, end, &field, &wt, &v, &s, &e);
        if (field == 1) {
            res_s = s;
            res_e = e;
        }
    }
    PyObject *resource = PyBytes_FromStringAndSize((const char *)res_s, res_s ? res_e - res_s : 0);
    if (resource == NULL)
        return -1;
    int rc = 0;
    while (rc == 0 && p < end) {
        uint32_t field;
        int wt;
        uint64_t v;
        P s = NULL, e = NULL;
        next_field(&p, end, &field, &wt, &v, &s, &e);
        if (field == 2)
            rc = scope_metrics(w, resource, s, e);
    }
    Py_DECREF(resource);
    return rc;
}

static int flush_skipped(Walk *w, PyObject *skipped) {
    for (int i = 0; i < R_N; i++) {
        if (!w->skipped[i])
            continue;
        PyObject *key = PyUnicode_FromString(REASONS[i]);
        if (key == NULL)
            return -1;
        PyObject *old = PyDict_GetItemWithError(skipped, key);
        if (old == NULL && PyErr_Occurred()) {
            Py_DECREF(key);
            return -1;
        }
        Py_ssize_t n = w->skipped[i] + (old ? PyLong_AsSsize_t(old) : 0);
        PyObject *val = (n == -1 && PyErr_Occurred()) ? NULL : PyLong_FromSsize_t(n);
        int rc = val ? PyDict_SetItem(skipped, key, val) : -1;
        Py_XDECREF(val);
        Py_DECREF(key);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* A bytes object written again must not keep the hash of what it held (only ever one nobody else holds). */
static void forget_hash(PyObject *bytes) {
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
    ((PyBytesObject *)bytes)->ob_shash = -1;
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
}

static PyObject *renderer_render(Renderer *self, PyObject *args) {
    Py_buffer raw;
    PyObject *cuts, *offsets, *skipped;
    double now;
    unsigned long long now_s;
    if (!PyArg_ParseTuple(args, "y*O!O!O!dK", &raw, &PyList_Type, &cuts, &PyList_Type, &offsets, &PyDict_Type,
                          &skipped, &now, &now_s))
        return NULL;
    P p = raw.buf, end = p + raw.len;
    if (self->busy) {
        PyBuffer_Release(&raw);
        PyErr_SetString(PyExc_RuntimeError, "Renderer.render called while it renders");
        return NULL;
    }
    if (!plain(&S_REQ, p, end)) {
        PyBuffer_Release(&raw);
        Py_RETURN_NONE;
    }
    self->busy = 1;
    /* The output is written straight into the bytes object it is returned as: the last one again when the
     * caller let it go (no new memory to fault in, no copy), else a new one. */
    if (self->text != NULL && Py_REFCNT(self->text) != 1)
        Py_CLEAR(self->text);
    if (self->text == NULL) {
        self->text_cap = 1 << 16;
        self->text = PyBytes_FromStringAndSize(NULL, self->text_cap);
        if (self->text == NULL) {
            self->busy = 0;
            PyBuffer_Release(&raw);
            return NULL;
        }
    }
    Py_SET_SIZE(self->text, self->text_cap);
    self->out.bytes = self->text;
    self->out.p = PyBytes_AS_STRING(self->text);
    self->out.cap = self->text_cap;
    self->out.len = 0;
    Walk w;
    memset(&w, 0, sizeof(w));
    w.r = self;
    w.cuts = cuts;
    w.offsets = offsets;
    w.now = now;
    w.now_s = now_s;
    int rc = 0;
    while (rc == 0 && p < end) {
        uint32_t field;
        int wt;
        uint64_t v;
        P s = NULL, e = NULL;
        next_field(&p, end, &field, &wt, &v, &s, &e);
        if (field == 1)
            rc = resource_metrics(&w, s, e);
    }
    PyBuffer_Release(&raw);
    self->busy = 0;
    Py_ssize_t len = self->out.len;
    self->text = self->out.bytes; /* resized (moved) as it grew, or NULL when that failed */
    self->text_cap = self->out.cap;
    self->out.bytes = NULL;
    self->out.p = NULL;
    self->out.cap = self->out.len = 0;
    if (rc < 0) {
        /* what was skipped before the error is counted, as the Python walk's MappedMetrics has it */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        flush_skipped(&w, skipped);
        PyErr_Restore(type, value, tb);
        return NULL;
    }
    if (flush_skipped(&w, skipped) < 0)
        return NULL;
    PyObject *text = self->text;
    Py_SET_SIZE(text, len);
    PyBytes_AS_STRING(text)[len] = '\0';
    forget_hash(text);
    if (self->text_cap > (1 << 24)) { /* a text past 16 MiB is not kept for the next request */
        self->text = NULL;
        return text;
    }
    Py_INCREF(text);
    return text;
}

static PyObject *renderer_delta(Renderer *self, PyObject *args) {
    Py_buffer key;
    unsigned long long start, ts;
    PyObject *values;
    double now;
    if (!PyArg_ParseTuple(args, "y*KKO!d", &key, &start, &ts, &PyTuple_Type, &values, &now))
        return NULL;
    if (self->busy) {
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_RuntimeError, "Renderer.delta called while it renders");
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(values);
    Num *vals = PyMem_Malloc(sizeof(Num) * (size_t)(n ? n : 1) * 2);
    if (vals == NULL) {
        PyBuffer_Release(&key);
        return PyErr_NoMemory();
    }
    PyObject *out = NULL;
    for (Py_ssize_t i = 0; i < n; i++)
        if (num_from_py(PyTuple_GET_ITEM(values, i), &vals[i]) < 0)
            goto done;
    if (n > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "too many values");
        goto done;
    }
    int rc = st_update(self, key.buf, key.len, start, ts, vals, (int)n, now, vals + n);
    if (rc == DELTA_ERROR)
        goto done;
    if (rc != DELTA_OK) {
        out = PyLong_FromLong(rc);
        goto done;
    }
    out = PyTuple_New(n);
    for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
        PyObject *x = num_to_py(vals[n + i]);
        if (x == NULL)
            Py_CLEAR(out);
        else
            PyTuple_SET_ITEM(out, i, x);
    }
done:
    PyMem_Free(vals);
    PyBuffer_Release(&key);
    return out;
}

static PyObject *renderer_expire(Renderer *self, PyObject *arg) {
    double deadline = PyFloat_AsDouble(arg);
    if (deadline == -1.0 && PyErr_Occurred())
        return NULL;
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Renderer.expire called while it renders");
        return NULL;
    }
    while (self->t.oldest != NULL && !(self->t.oldest->seen > deadline))
        tbl_remove(&self->t, self->t.oldest);
    Py_RETURN_NONE;
}

static PyObject *renderer_get_tracked(Renderer *self, void *closure) {
    return PyLong_FromSsize_t(self->t.count);
}

static PyObject *renderer_get_evicted(Renderer *self, void *closure) {
    return PyLong_FromSsize_t(self->evicted);
}

static int renderer_init(Renderer *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"scope_of", "heads_of", "tag_of", "quantiles_of", "to_delta", "initial",
                             "aggregations", "quantiles", "started_ns", "max_series", NULL};
    PyObject *scope_of, *heads_of, *tag_of, *quantiles_of;
    int to_delta, initial, aggregations, quantiles;
    unsigned long long started_ns;
    Py_ssize_t max_series;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOO$pippKn", kwlist, &scope_of, &heads_of, &tag_of,
                                     &quantiles_of, &to_delta, &initial, &aggregations, &quantiles,
                                     &started_ns, &max_series))
        return -1;
    if (self->t.slots != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Renderer is initialized once");
        return -1;
    }
    if (initial < 0 || initial > 2 || max_series < 1) {
        PyErr_SetString(PyExc_ValueError, "initial must be 0, 1 or 2 and max_series at least 1");
        return -1;
    }
    self->t.slots = PyMem_Calloc(64, sizeof(Entry *));
    if (self->t.slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->t.mask = 63;
    Py_INCREF(scope_of);
    Py_INCREF(heads_of);
    Py_INCREF(tag_of);
    Py_INCREF(quantiles_of);
    self->scope_of = scope_of;
    self->heads_of = heads_of;
    self->tag_of = tag_of;
    self->quantiles_of = quantiles_of;
    self->to_delta = to_delta;
    self->initial = initial;
    self->aggregations = aggregations;
    self->quantiles = quantiles;
    self->started_ns = started_ns;
    self->max_series = max_series;
    return 0;
}

static int renderer_traverse(Renderer *self, visitproc visit, void *arg) {
    Py_VISIT(self->scope_of);
    Py_VISIT(self->heads_of);
    Py_VISIT(self->tag_of);
    Py_VISIT(self->quantiles_of);
    return 0;
}

static int renderer_clear(Renderer *self) {
    Py_CLEAR(self->scope_of);
    Py_CLEAR(self->heads_of);
    Py_CLEAR(self->tag_of);
    Py_CLEAR(self->quantiles_of);
    return 0;
}

static void renderer_dealloc(Renderer *self) {
    PyObject_GC_UnTrack(self);
    renderer_clear(self);
    Entry *e = self->t.oldest;
    while (e) {
        Entry *next = e->newer;
        PyMem_Free(e->vals);
        PyMem_Free(e);
        e = next;
    }
    PyMem_Free(self->t.slots);
    Py_CLEAR(self->text);
    PyMem_Free(self->out.p);
    PyMem_Free(self->key.p);
    PyMem_Free(self->tail.p);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef renderer_methods[] = {
    {"render", (PyCFunction)renderer_render, METH_VARARGS,
     "render(raw, cuts, offsets, skipped, now, now_s) -> the series as JSON text, or None (nothing done)"},
    {"delta", (PyCFunction)renderer_delta, METH_VARARGS,
     "delta(key, start, ts, values, now) -> the increase (a tuple), 0 (out of order) or 1 (first or reset)"},
    {"expire", (PyCFunction)renderer_expire, METH_O, "expire(deadline): forgets the series last seen by then"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef renderer_getset[] = {
    {"tracked", (getter)renderer_get_tracked, NULL, "series whose last point is kept", NULL},
    {"evicted", (getter)renderer_get_evicted, NULL, "series forgotten past max_series", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject RendererType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "exporters.datadog._ddwire.Renderer",
    .tp_basicsize = sizeof(Renderer),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "OTLP metrics requests -> Datadog series (see the comment at the top of _ddwire.c)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)renderer_init,
    .tp_dealloc = (destructor)renderer_dealloc,
    .tp_traverse = (traverseproc)renderer_traverse,
    .tp_clear = (inquiry)renderer_clear,
    .tp_methods = renderer_methods,
    .tp_getset = renderer_getset,
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "exporters.datadog._ddwire", "The datadog exporter's metrics renderer in C.", -1, NULL,
};

PyMODINIT_FUNC PyInit__ddwire(void) {
    const uint16_t one = 1;
    if (*(const unsigned char *)&one != 1) {
        PyErr_SetString(PyExc_ImportError, "_ddwire reads fixed64 fields as little-endian");
        return NULL;
    }
    if (PyType_Ready(&RendererType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL)
        return NULL;
    Py_INCREF(&RendererType);
    if (PyModule_AddObject(m, "Renderer", (PyObject *)&RendererType) < 0) {
        Py_DECREF(&RendererType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

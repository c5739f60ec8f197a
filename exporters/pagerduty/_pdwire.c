/*
 * exporters.pagerduty._pdwire: the pagerduty exporter's ingest pass in C (store.py, SeriesStore.ingest).
 *
 * `Ingestor(names, classes, kinds, timelines, next_timeline, append, replace)` is built by the store
 * whenever its metrics change: `names` are the UTF-8 names of the metrics rules reference, `classes`
 * and `kinds` are (GaugeSeries, CounterSeries, HistogramSeries) and (Kind.GAUGE, Kind.COUNTER,
 * Kind.HISTOGRAM), `timelines` / `next_timeline` / `append` / `replace` are store.py's timeline map,
 * its function and its two operation codes.
 *
 * `Ingestor.ingest(raw, now, tables, resource, slow, result)` does what the Python loop of
 * SeriesStore.ingest does, in two phases:
 *
 * 1. Read: one pass over the serialized ExportMetricsServiceRequest, touching nothing. A metric is
 *    looked at only when its bytes start with a referenced name (as the Python loop decides); its
 *    points are read into a scratch list (attributes as spans of the request, times, the value, or the
 *    histogram's bounds, bucket counts, count and sum). Anything but plain well-formed OTLP (a
 *    malformed or truncated field, a known field with another wire type, groups, a singular field
 *    written twice where that matters, a non-ASCII schema_url, a metric that does not start with its
 *    name) stops the pass: `ingest` returns None and the store reads the request with its Python code,
 *    which decides what is malformed. So nothing is ever half applied by this pass.
 * 2. Apply, in request order: per referenced metric `resource(resource bytes)` (the store's cached
 *    decoding: it raises where the Python loop would), `table.changes += 1`; per point its series, the
 *    one `table.series` holds under the key the Python loop builds, `((resource, scope), attributes_key)`
 *    (each attribute's KeyValue bytes after its length as a minimal varint, joined: exact and
 *    self-delimiting in one bytes object). The series is found first in this pass's own index of
 *    series, without building the key: a 2-way hash table from (the origin's content hash, the
 *    attributes' bytes) to the series and the key it holds (`Series.key`; the entry holds both),
 *    compared in place with the point's attribute spans. An entry is valid while its table's state is
 *    the one it was made in: the same `series` dict object and the same `removed` count (store.py
 *    bumps it whenever it removes or replaces a series; the state is read at each metric and after
 *    each slow-path call, and a change gives the table a new epoch, so its older entries no longer
 *    match; they are released at the end of the call). Otherwise the key is built and looked up in
 *    `table.series`, and the series indexed when the fast path took the point. The index grows
 *    (rehashed) to twice the tables' series, up to INDEX_MAX entries; a collision only sends a point to
 *    the dict. (An earlier cache of the keys built by earlier calls was faster in-process only: it
 *    added memory to reach per point, where this index replaces the new key, its hash and the dict
 *    probe. Prefetching the next points' buckets, series and arrays was tried on top of the index: no
 *    gain measured, in-process or in the daemon.)
 *    A point of an existing series of the right class whose sample is a fold into its last slot or a
 *    new slot (gauges, delta and cumulative counters with their reset rule, delta and cumulative
 *    histograms with unchanged bounds, compared as bytes with the series' `layout`) is applied here,
 *    writing the series' arrays in place (or appending to them) and its __slots__ attributes through
 *    their member descriptors' offsets. Every other point (a new series, a kind or bounds change, a
 *    series with no sample yet, anything unexpected) goes to
 *    `slow(table, key, kind, delta, point bytes, now, result)`: the Python loop body itself, so those
 *    cases have one implementation.
 *
 * Returns (kept, invalid, out_of_order, unsupported_type) for the points it applied itself (the slow
 * path counts into `result`), or None (phase 1 refused the request; nothing was touched).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../../pipeline/_otlpwire.h"

enum { K_GAUGE, K_COUNTER, K_HIST, NKINDS };

/* The series attributes the fast paths read or write (store.py's __slots__). */
enum {
    A_TIMES, A_KIND, A_RES, A_SLOT, A_TL, A_KEY,         /* Series */
    A_LAST, A_CSUMS, A_CCOUNTS, A_MINS, A_MAXS, A_RUNNING, /* GaugeSeries */
    A_TOTALS, A_RAW, A_OFFSET, A_START, A_POINT,          /* CounterSeries (and raw, start, point: histograms) */
    A_BOUNDS, A_STRIDE, A_DATA, A_OFFSETS,                /* HistogramSeries (bounds: `layout`, as bytes) */
    NATTRS
};
static const char *const ATTR_NAMES[NATTRS] = {
    "times", "kind", "resolution", "slot", "tl", "key", "last", "csums", "ccounts", "mins", "maxs", "running",
    "totals", "raw", "offset", "start_ns", "point_ns", "layout", "stride", "data", "offsets",
};
static const int ATTR_USED[NKINDS][NATTRS] = {
    [K_GAUGE] = {[A_TIMES] = 1, [A_KIND] = 1, [A_RES] = 1, [A_SLOT] = 1, [A_TL] = 1, [A_KEY] = 1, [A_LAST] = 1,
                 [A_CSUMS] = 1, [A_CCOUNTS] = 1, [A_MINS] = 1, [A_MAXS] = 1, [A_RUNNING] = 1},
    [K_COUNTER] = {[A_TIMES] = 1, [A_KIND] = 1, [A_RES] = 1, [A_SLOT] = 1, [A_TL] = 1, [A_KEY] = 1, [A_TOTALS] = 1,
                   [A_RAW] = 1, [A_OFFSET] = 1, [A_START] = 1, [A_POINT] = 1},
    [K_HIST] = {[A_TIMES] = 1, [A_KIND] = 1, [A_RES] = 1, [A_SLOT] = 1, [A_TL] = 1, [A_KEY] = 1, [A_RAW] = 1,
                [A_START] = 1, [A_POINT] = 1, [A_BOUNDS] = 1, [A_STRIDE] = 1, [A_DATA] = 1, [A_OFFSETS] = 1},
};

typedef struct {
    const unsigned char *p;
    Py_ssize_t n;
} Span;

enum { OP_METRIC, OP_POINT };

typedef struct {
    unsigned char type;
    unsigned char kind;        /* METRIC: K_*; POINT: copied from its metric */
    unsigned char delta;
    unsigned char unsupported; /* METRIC: an exponential histogram or a summary */
    int table;                 /* METRIC: index into `tables` */
    int origin;                /* METRIC: index into the call's origins */
    Span point;                /* POINT: the point's bytes */
    Py_ssize_t attr0, nattr;   /* POINT: its attributes in the attribute spans */
    Py_ssize_t b0, nb, c0, nc; /* POINT (histograms): bounds and bucket counts in the doubles */
    uint64_t start_ns, time_ns;
    double value, count, sum;
} Op;

#define ORIGIN_SLOTS 256   /* (resource, scope) tuples kept between calls, by content (2-way) */
#define ORIGIN_MAX 4096    /* bytes of a resource and scope kept there at most */
#define SCRATCH_MAX (8 << 20) /* bytes of a scratch list kept for the next call at most */
#define TL_SLOTS 256    /* timeline steps remembered within a call (`now` is the same for all its points) */

typedef struct {
    uint64_t h;
    PyObject *obj;
} Cached;

#define INDEX_MAX (1 << 17) /* entries of the index of series at most (56 bytes each) */

/* An entry of the index of series: a series (of table state `epoch`) and the key it was stored under, with
 * that key's parts, found by `h` (the origin's content hash, then the attributes'). */
typedef struct {
    uint64_t h, epoch;
    PyObject *series, *key;  /* (both held) */
    PyObject *origin, *attrs; /* key[0] and key[1] (the key holds them) */
    Py_ssize_t table;
} Entry;

/* What a table was like when its index entries were made: they are valid while its `series` dict is the same
 * object and its `removed` count the same value (store.py bumps it whenever it removes or replaces a series). */
typedef struct {
    PyObject *dict; /* (held) */
    long long removed;
    Py_ssize_t size; /* len(series) when last seen (sizes the index) */
    uint64_t epoch;  /* 0: not indexed */
} TableState;

typedef struct {
    PyObject_HEAD
    PyObject *names; /* tuple of bytes */
    Py_ssize_t nnames;
    int empty_name;
    PyObject *classes[NKINDS];
    PyObject *kinds[NKINDS];
    Py_ssize_t off[NKINDS][NATTRS];
    PyObject *timelines, *next_timeline, *op_append, *op_replace;
    /* scratch of one call */
    Op *ops;
    Py_ssize_t nops, cap_ops;
    Span *attrs;
    Py_ssize_t nattrs, cap_attrs;
    double *dbl;
    Py_ssize_t ndbl, cap_dbl;
    double *row;
    Py_ssize_t cap_row;
    int busy;
    /* The (resource, scope) tuples of the last requests, found again without building them (each entry
     * holds its tuple): their bytes are not copied and hashed again for every series key. */
    Cached *origins; /* ORIGIN_SLOTS */
    uint64_t *ohash; /* the content hash of each origin of the call (parallel to its list) */
    Py_ssize_t cap_ohash;
    /* The index of series (2-way buckets; see the header comment) and each table's state. */
    Entry *index;
    Py_ssize_t cap_index; /* a power of two, or 0 */
    TableState *tstate;   /* nnames */
    uint64_t epochs;      /* the last epoch given out (unique across tables) */
    int stale;            /* a table's epoch changed in this call: its old entries are released at the end */
} Ingestor;

static inline uint64_t mix(uint64_t h, uint64_t w) {
    h ^= w;
    h *= 0x9E3779B97F4A7C15ull;
    return h ^ (h >> 32);
}

static uint64_t hash_bytes(uint64_t h, const unsigned char *p, Py_ssize_t n) {
    h = mix(h, (uint64_t)n);
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = mix(h, w);
    }
    if (i < n) {
        uint64_t w = 0;
        memcpy(&w, p + i, (size_t)(n - i));
        h = mix(h, w);
    }
    return h;
}

static inline int same_bytes(PyObject *b, const unsigned char *p, Py_ssize_t n) {
    return PyBytes_CheckExact(b) && PyBytes_GET_SIZE(b) == n && memcmp(PyBytes_AS_STRING(b), p, (size_t)n) == 0;
}

static PyTypeObject *array_type;
static PyObject *s_append, *s_frombytes, *s_changes, *s_series, *s_removed, *one;

/* -- wire primitives (0 on success, -1 on anything odd) -------------------------------------------- */

static inline int rd_ld(const unsigned char *p, const unsigned char *end, Span *s, const unsigned char **out) {
    uint64_t n;
    if (ow_varint(p, end, &p, &n) < 0 || n > (uint64_t)(end - p))
        return -1;
    s->p = p;
    s->n = (Py_ssize_t)n;
    *out = p + n;
    return 0;
}

static inline uint64_t rd_fixed64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8); /* little-endian hosts only: see module init */
    return v;
}

static inline double rd_double(const unsigned char *p) {
    double v;
    memcpy(&v, p, 8);
    return v;
}

static int ascii(Span s) {
    for (Py_ssize_t i = 0; i < s.n; i++)
        if (s.p[i] & 0x80)
            return 0;
    return 1;
}

/* -- scratch ------------------------------------------------------------------------------------------ */

static int grow(void **buf, Py_ssize_t *cap, Py_ssize_t need, size_t item) {
    if (need <= *cap)
        return 0;
    Py_ssize_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    void *p = PyMem_Realloc(*buf, (size_t)n * item);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *buf = p;
    *cap = n;
    return 0;
}

static Op *new_op(Ingestor *self) {
    if (grow((void **)&self->ops, &self->cap_ops, self->nops + 1, sizeof(Op)) < 0)
        return NULL;
    Op *op = &self->ops[self->nops++];
    memset(op, 0, sizeof(Op));
    return op;
}

static int push_attr(Ingestor *self, Span s) {
    if (grow((void **)&self->attrs, &self->cap_attrs, self->nattrs + 1, sizeof(Span)) < 0)
        return -1;
    self->attrs[self->nattrs++] = s;
    return 0;
}

static int push_dbl(Ingestor *self, double v) {
    if (grow((void **)&self->dbl, &self->cap_dbl, self->ndbl + 1, sizeof(double)) < 0)
        return -1;
    self->dbl[self->ndbl++] = v;
    return 0;
}

/* -- phase 1: read ------------------------------------------------------------------------------------ */
/* Return codes: 0 read, 1 not plain OTLP (the store reads the request in Python), -1 a Python error. */
#define TRY(x)                                                                                                 \
    do {                                                                                                       \
        int rc_ = (x);                                                                                         \
        if (rc_)                                                                                               \
            return rc_;                                                                                        \
    } while (0)
#define ODD(x)                                                                                                 \
    do {                                                                                                       \
        if (x)                                                                                                 \
            return 1;                                                                                          \
    } while (0)

typedef struct {
    Ingestor *self;
    PyObject *origins; /* list of (resource bytes, scope bytes) */
    Span res, scope;
    PyObject *res_obj; /* the resource's bytes once a referenced metric needs them (borrowed from origins) */
    int origin;        /* the scope's origin index, -1 until a referenced metric needs it */
    /* histogram bounds are collected here while the counts go to self->dbl */
    double *bounds;
    Py_ssize_t nbounds, cap_bounds;
} Read;

/* A repeated double / fixed64 field, packed (wt 2) or not (wt 1), appended to `dst` as doubles. */
static int rd_repeated(Ingestor *self, Read *r, int to_bounds, int wt, const unsigned char **pp,
                       const unsigned char *end) {
    const unsigned char *p = *pp;
    Span s;
    if (wt == 1) {
        ODD(end - p < 8);
        s.p = p;
        s.n = 8;
        p += 8;
    } else {
        ODD(wt != 2 || rd_ld(p, end, &s, &p) < 0 || s.n % 8 != 0);
    }
    for (Py_ssize_t i = 0; i < s.n; i += 8) {
        if (to_bounds) {
            if (grow((void **)&r->bounds, &r->cap_bounds, r->nbounds + 1, sizeof(double)) < 0)
                return -1;
            r->bounds[r->nbounds++] = rd_double(s.p + i);
        } else if (push_dbl(self, (double)rd_fixed64(s.p + i)) < 0) {
            return -1;
        }
    }
    *pp = p;
    return 0;
}

static int read_point(Read *r, int kind, Span pt) {
    Ingestor *self = r->self;
    const int hist = kind == K_HIST;
    const uint32_t f_attrs = hist ? 9 : 7, f_flags = hist ? 10 : 8;
    Py_ssize_t attr0 = self->nattrs, c0 = self->ndbl;
    r->nbounds = 0;
    uint64_t start = 0, time = 0, flags = 0, count = 0;
    double dvalue = 0.0, sum = 0.0;
    int64_t ivalue = 0;
    int which = 0; /* the value oneof: 0 unset, 1 as_double, 2 as_int */
    const unsigned char *p = pt.p, *end = pt.p + pt.n;
    while (p < end) {
        uint32_t field;
        int wt;
        ODD(ow_tag(p, end, &p, &field, &wt) < 0);
        if (field == f_attrs) {
            Span a;
            ODD(wt != 2 || rd_ld(p, end, &a, &p) < 0);
            if (push_attr(self, a) < 0)
                return -1;
        } else if (field == f_flags) {
            ODD(wt != 0 || ow_varint(p, end, &p, &flags) < 0);
        } else if (field == 2 || field == 3 || field == 4 || (!hist && field == 6) || (hist && field == 5)) {
            ODD(wt != 1 || end - p < 8);
            uint64_t v = rd_fixed64(p);
            p += 8;
            if (field == 2)
                start = v;
            else if (field == 3)
                time = v;
            else if (hist && field == 4)
                count = v;
            else if (hist) /* 5: sum */
                memcpy(&sum, &v, 8);
            else if (field == 4) {
                memcpy(&dvalue, &v, 8);
                which = 1;
            } else {
                ivalue = (int64_t)v;
                which = 2;
            }
        } else if (hist && (field == 6 || field == 7)) {
            TRY(rd_repeated(self, r, field == 7, wt, &p, end));
        } else {
            ODD(ow_skip(p, end, wt, &p) < 0);
        }
    }
    if (flags & 1) { /* DATA_POINT_FLAGS_NO_RECORDED_VALUE: not a sample */
        self->nattrs = attr0;
        self->ndbl = c0;
        return 0;
    }
    Py_ssize_t b0 = self->ndbl;
    for (Py_ssize_t i = 0; i < r->nbounds; i++)
        if (push_dbl(self, r->bounds[i]) < 0)
            return -1;
    Op *op = new_op(self);
    if (op == NULL)
        return -1;
    op->type = OP_POINT;
    op->point = pt;
    op->attr0 = attr0;
    op->nattr = self->nattrs - attr0;
    op->start_ns = start;
    op->time_ns = time;
    if (hist) {
        op->c0 = c0;
        op->nc = b0 - c0;
        op->b0 = b0;
        op->nb = r->nbounds;
        op->count = (double)count;
        op->sum = sum;
    } else {
        op->value = which == 2 ? (double)ivalue : which == 1 ? dvalue : 0.0;
    }
    return 0;
}

/* Gauge / Sum / Histogram: its points, its temporality and monotonicity (last one wins, as in protobuf). */
static int read_data(Read *r, int data_field, Span d, int *kind, int *delta) {
    const unsigned char *p = d.p, *end = d.p + d.n;
    int pkind = data_field == 9 ? K_HIST : K_GAUGE; /* how the points are read */
    uint64_t temporality = 0, monotonic = 0;
    while (p < end) {
        uint32_t field;
        int wt;
        ODD(ow_tag(p, end, &p, &field, &wt) < 0);
        if (field == 1) {
            Span pt;
            ODD(wt != 2 || rd_ld(p, end, &pt, &p) < 0);
            TRY(read_point(r, pkind, pt));
        } else if (data_field != 5 && field == 2) {
            ODD(wt != 0 || ow_varint(p, end, &p, &temporality) < 0);
        } else if (data_field == 7 && field == 3) {
            ODD(wt != 0 || ow_varint(p, end, &p, &monotonic) < 0);
        } else {
            ODD(ow_skip(p, end, wt, &p) < 0);
        }
    }
    /* AggregationTemporality is an enum (int32: the low 32 bits), DELTA = 1. */
    *delta = data_field != 5 && (uint32_t)temporality == 1;
    if (data_field == 9)
        *kind = K_HIST;
    else
        *kind = data_field == 7 && monotonic ? K_COUNTER : K_GAUGE;
    return 0;
}

/* The content hash of the origin about to be appended to the call's list. */
static int push_ohash(Ingestor *self, PyObject *origins, uint64_t h) {
    Py_ssize_t i = PyList_GET_SIZE(origins);
    if (grow((void **)&self->ohash, &self->cap_ohash, i + 1, sizeof(uint64_t)) < 0)
        return -1;
    self->ohash[i] = h;
    return 0;
}

static int origin_index(Read *r) {
    if (r->origin >= 0)
        return 0;
    Ingestor *self = r->self;
    if (self->origins == NULL && (self->origins = PyMem_Calloc(ORIGIN_SLOTS, sizeof(Cached))) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    uint64_t h = hash_bytes(hash_bytes(0, r->res.p, r->res.n), r->scope.p, r->scope.n);
    Cached *c = &self->origins[h & (ORIGIN_SLOTS - 2)];
    for (int way = 0; way < 2; way++)
        if (c[way].obj != NULL && c[way].h == h && same_bytes(PyTuple_GET_ITEM(c[way].obj, 0), r->res.p, r->res.n)
            && same_bytes(PyTuple_GET_ITEM(c[way].obj, 1), r->scope.p, r->scope.n)) {
            if (push_ohash(self, r->origins, h) < 0 || PyList_Append(r->origins, c[way].obj) < 0)
                return -1;
            r->res_obj = PyTuple_GET_ITEM(c[way].obj, 0);
            r->origin = (int)PyList_GET_SIZE(r->origins) - 1;
            return 0;
        }
    PyObject *o = NULL, *scope = NULL;
    if (r->res.n + r->scope.n > ORIGIN_MAX)
        c = NULL; /* (not kept) */
    if (r->res_obj == NULL) {
        PyObject *res = PyBytes_FromStringAndSize((const char *)r->res.p, r->res.n);
        if (res == NULL)
            return -1;
        scope = PyBytes_FromStringAndSize((const char *)r->scope.p, r->scope.n);
        o = scope ? PyTuple_Pack(2, res, scope) : NULL;
        Py_DECREF(res);
    } else {
        scope = PyBytes_FromStringAndSize((const char *)r->scope.p, r->scope.n);
        o = scope ? PyTuple_Pack(2, r->res_obj, scope) : NULL;
    }
    Py_XDECREF(scope);
    if (o == NULL || push_ohash(self, r->origins, h) < 0 || PyList_Append(r->origins, o) < 0) {
        Py_XDECREF(o);
        return -1;
    }
    r->res_obj = PyTuple_GET_ITEM(o, 0);
    if (c != NULL) {
        Py_XSETREF(c[1].obj, c[0].obj); /* the newest first, the older one second, the oldest out */
        c[1].h = c[0].h;
        c[0].h = h;
        c[0].obj = o; /* (the list holds it too) */
    } else {
        Py_DECREF(o); /* (the list holds it) */
    }
    r->origin = (int)PyList_GET_SIZE(r->origins) - 1;
    return 0;
}

static int read_metric(Read *r, Span m) {
    Ingestor *self = r->self;
    if (m.n == 0) {
        ODD(self->empty_name); /* the Python loop decodes it: let it */
        return 0;
    }
    ODD(m.p[0] != 0x0A); /* the name is not the first field: the Python loop decodes the whole metric */
    /* Which referenced name it starts with: field 1, its length as a minimal varint, the name. */
    uint64_t len;
    const unsigned char *name;
    if (ow_varint(m.p + 1, m.p + m.n, &name, &len) < 0 || len > (uint64_t)(m.p + m.n - name))
        return 0;
    int vlen = 1;
    for (uint64_t l = len; l >= 0x80; l >>= 7)
        vlen++;
    if (name - (m.p + 1) != vlen)
        return 0;
    int table = -1;
    for (Py_ssize_t i = 0; i < self->nnames; i++) {
        PyObject *n = PyTuple_GET_ITEM(self->names, i);
        if ((uint64_t)PyBytes_GET_SIZE(n) == len && memcmp(PyBytes_AS_STRING(n), name, (size_t)len) == 0) {
            table = (int)i;
            break;
        }
    }
    if (table < 0)
        return 0;
    /* A referenced metric: read as the store's skeleton does; a second name or data field is left to it. */
    int names = 0, data_field = 0;
    Span data = {NULL, 0};
    const unsigned char *p = m.p, *end = m.p + m.n;
    while (p < end) {
        uint32_t field;
        int wt;
        Span s;
        ODD(ow_tag(p, end, &p, &field, &wt) < 0);
        if (field == 1) {
            ODD(wt != 2 || rd_ld(p, end, &s, &p) < 0 || names++);
        } else if (field == 5 || field == 7 || field == 9 || field == 10 || field == 11) {
            ODD(wt != 2 || rd_ld(p, end, &data, &p) < 0 || data_field);
            data_field = (int)field;
        } else {
            ODD(ow_skip(p, end, wt, &p) < 0);
        }
    }
    TRY(origin_index(r));
    Py_ssize_t at = self->nops;
    Op *op = new_op(self);
    if (op == NULL)
        return -1;
    op->type = OP_METRIC;
    op->table = table;
    op->origin = r->origin;
    op->kind = 255; /* no data: no points */
    if (data_field == 10 || data_field == 11) {
        op->unsupported = 1;
    } else if (data_field) {
        int kind, delta;
        TRY(read_data(r, data_field, data, &kind, &delta));
        op = &self->ops[at]; /* (the list may have moved) */
        op->kind = (unsigned char)kind;
        op->delta = (unsigned char)delta;
        for (Py_ssize_t i = at + 1; i < self->nops; i++) {
            self->ops[i].kind = (unsigned char)kind;
            self->ops[i].delta = (unsigned char)delta;
        }
    }
    return 0;
}

/* ResourceMetrics and ScopeMetrics have one shape: field 1 the resource or scope (at most once) into *one,
 * field 2 the repeated children read by `child`, field 3 the schema URL. The singular fields are read first
 * (they may come after the repeated ones). */
static int read_level(Read *r, Span m, Span *one, int (*child)(Read *, Span)) {
    const unsigned char *p = m.p, *end = m.p + m.n;
    int seen = 0;
    one->p = (const unsigned char *)"";
    one->n = 0;
    while (p < end) {
        uint32_t field;
        int wt;
        Span s;
        ODD(ow_tag(p, end, &p, &field, &wt) < 0);
        if (field >= 1 && field <= 3) {
            ODD(wt != 2 || rd_ld(p, end, &s, &p) < 0);
            if (field == 1) {
                ODD(seen++);
                *one = s;
            } else if (field == 3) {
                ODD(!ascii(s));
            }
        } else {
            ODD(ow_skip(p, end, wt, &p) < 0);
        }
    }
    for (p = m.p; p < end;) {
        uint32_t field;
        int wt;
        Span s;
        ODD(ow_tag(p, end, &p, &field, &wt) < 0); /* (checked above) */
        if (field == 2) {
            ODD(rd_ld(p, end, &s, &p) < 0);
            TRY(child(r, s));
        } else {
            ODD(ow_skip(p, end, wt, &p) < 0);
        }
    }
    return 0;
}

static int read_scope(Read *r, Span sm) {
    r->origin = -1;
    return read_level(r, sm, &r->scope, read_metric);
}

static int read_resource_metrics(Read *r, Span rm) {
    r->res_obj = NULL;
    return read_level(r, rm, &r->res, read_scope);
}

static int read_request(Read *r, const unsigned char *p, const unsigned char *end) {
    while (p < end) {
        uint32_t field;
        int wt;
        Span s;
        ODD(ow_tag(p, end, &p, &field, &wt) < 0);
        if (field == 1) {
            ODD(wt != 2 || rd_ld(p, end, &s, &p) < 0);
            TRY(read_resource_metrics(r, s));
        } else {
            ODD(ow_skip(p, end, wt, &p) < 0);
        }
    }
    return 0;
}

/* -- phase 2: apply ------------------------------------------------------------------------------------ */

enum { FAST_KEPT, FAST_INVALID, FAST_OUT_OF_ORDER, FAST_SLOW };

static inline PyObject *attr(Ingestor *self, int kind, PyObject *o, int a) {
    return *(PyObject **)((char *)o + self->off[kind][a]);
}

static inline void set_attr(Ingestor *self, int kind, PyObject *o, int a, PyObject *v /* stolen */) {
    PyObject **slot = (PyObject **)((char *)o + self->off[kind][a]);
    PyObject *old = *slot;
    *slot = v;
    Py_XDECREF(old);
}

/* A float attribute, or -1 when it is not exactly a float. */
static inline int float_attr(Ingestor *self, int kind, PyObject *o, int a, double *v) {
    PyObject *x = attr(self, kind, o, a);
    if (x == NULL || !PyFloat_CheckExact(x))
        return -1;
    *v = PyFloat_AS_DOUBLE(x);
    return 0;
}

/* A uint64 int attribute, or -1 when it is anything else. */
static inline int u64_attr(Ingestor *self, int kind, PyObject *o, int a, uint64_t *v) {
    PyObject *x = attr(self, kind, o, a);
    if (x == NULL || !PyLong_CheckExact(x))
        return -1;
    *v = PyLong_AsUnsignedLongLong(x);
    if (*v == (uint64_t)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    return 0;
}

static int set_u64(Ingestor *self, int kind, PyObject *o, int a, uint64_t v, uint64_t old) {
    if (v == old)
        return 0;
    PyObject *x = PyLong_FromUnsignedLongLong(v);
    if (x == NULL)
        return -1;
    set_attr(self, kind, o, a, x);
    return 0;
}

static int set_float(Ingestor *self, int kind, PyObject *o, int a, double v) {
    PyObject *x = PyFloat_FromDouble(v);
    if (x == NULL)
        return -1;
    set_attr(self, kind, o, a, x);
    return 0;
}

/* The arrays of a series: each an array('d') of `n` items (histogram data: n * stride). */
typedef struct {
    Py_buffer view[6];
    int count;
} Arrays;

static void release(Arrays *a) {
    for (int i = 0; i < a->count; i++)
        PyBuffer_Release(&a->view[i]);
    a->count = 0;
}

/* 0 held, 1 not the expected array (released), -1 error (released). */
static int hold(Arrays *a, PyObject *arr, Py_ssize_t len) {
    if (arr == NULL || Py_TYPE(arr) != array_type) {
        release(a);
        return 1;
    }
    Py_buffer *v = &a->view[a->count];
    if (PyObject_GetBuffer(arr, v, PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
        release(a);
        return -1;
    }
    a->count++;
    if (v->itemsize != 8 || v->format == NULL || strcmp(v->format, "d") != 0 || v->len != len * 8) {
        release(a);
        return 1;
    }
    return 0;
}

static inline double *dat(Arrays *a, int i) {
    return (double *)a->view[i].buf;
}

static int append(PyObject *arr, double v) {
    PyObject *f = PyFloat_FromDouble(v);
    if (f == NULL)
        return -1;
    PyObject *r = PyObject_CallMethodOneArg(arr, s_append, f);
    Py_DECREF(f);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

typedef struct {
    long long tl;
    PyObject *next;
} Step;

typedef struct {
    PyObject *now;
    double t;
    PyObject *res;  /* the resolution the slot below is for */
    PyObject *slot; /* now // res */
    Step steps[2][TL_SLOTS]; /* timeline id → the next one, per operation (append, replace), in this call */
} Clock;

static void clock_clear(Clock *c) {
    Py_CLEAR(c->res);
    Py_CLEAR(c->slot);
    for (int op = 0; op < 2; op++)
        for (int i = 0; i < TL_SLOTS; i++)
            Py_CLEAR(c->steps[op][i].next);
}

/* The slot `now` falls in for the series' resolution (Python's float floor division, cached per call). */
static int slot_of(Clock *c, PyObject *res, double *slot) {
    if (res != c->res) {
        PyObject *s = PyNumber_FloorDivide(c->now, res);
        if (s == NULL)
            return -1;
        if (!PyFloat_CheckExact(s)) {
            Py_DECREF(s);
            return 1;
        }
        Py_XDECREF(c->slot);
        Py_XDECREF(c->res);
        c->slot = s;
        Py_INCREF(res);
        c->res = res;
    }
    *slot = PyFloat_AS_DOUBLE(c->slot);
    return 0;
}

/* store.py's _next_timeline(tl, op, now): the map first, the Python function when it has no entry. */
static int next_timeline(Ingestor *self, int kind, PyObject *s, int same, Clock *c) {
    PyObject *tl = attr(self, kind, s, A_TL), *op = same ? self->op_replace : self->op_append;
    if (tl == NULL) { /* (checked by fast()) */
        PyErr_SetString(PyExc_SystemError, "a series without a timeline");
        return -1;
    }
    long long id = PyLong_CheckExact(tl) ? PyLong_AsLongLong(tl) : -1;
    if (id == -1 && PyErr_Occurred())
        PyErr_Clear();
    Step *step = &c->steps[same][(uint64_t)id % TL_SLOTS];
    if (id >= 0 && step->next != NULL && step->tl == id) { /* (the map gave it for this step in this call) */
        set_attr(self, kind, s, A_TL, Py_NewRef(step->next));
        return 0;
    }
    PyObject *key = PyTuple_Pack(3, tl, op, c->now);
    if (key == NULL)
        return -1;
    PyObject *found = PyDict_GetItemWithError(self->timelines, key);
    Py_DECREF(key);
    if (found != NULL) {
        Py_INCREF(found);
    } else {
        if (PyErr_Occurred())
            return -1;
        PyObject *args[3] = {tl, op, c->now};
        found = PyObject_Vectorcall(self->next_timeline, args, 3, NULL);
        if (found == NULL)
            return -1;
    }
    if (id >= 0) {
        step->tl = id;
        Py_XSETREF(step->next, Py_NewRef(found));
    }
    set_attr(self, kind, s, A_TL, found);
    return 0;
}

/* What a new sample does to the slot: 1 same slot, 0 a new one (the series' slot is set), 1 < slow, -1 error.
 * Checked first; changes nothing but `slot`, after the caller checked everything else. */
static int check_slot(Ingestor *self, int kind, PyObject *s, Clock *c, double *slot, int *same) {
    PyObject *res = attr(self, kind, s, A_RES), *cur = attr(self, kind, s, A_SLOT);
    if (res == NULL || !PyFloat_CheckExact(res) || cur == NULL || !PyFloat_CheckExact(cur))
        return 1;
    int rc = slot_of(c, res, slot);
    if (rc)
        return rc;
    *same = *slot == PyFloat_AS_DOUBLE(cur);
    return 0;
}

static int take_slot(Ingestor *self, int kind, PyObject *s, Clock *c, int same) {
    if (!same) {
        Py_INCREF(c->slot);
        set_attr(self, kind, s, A_SLOT, c->slot);
    }
    return next_timeline(self, kind, s, same, c);
}

static Py_ssize_t series_len(Ingestor *self, int kind, PyObject *s) {
    PyObject *times = attr(self, kind, s, A_TIMES);
    if (times == NULL || Py_TYPE(times) != array_type)
        return -1;
    return Py_SIZE(times); /* an array's length */
}

static int fast_gauge(Ingestor *self, PyObject *s, const Op *op, Clock *c) {
    const int K = K_GAUGE;
    double v = op->value, running = 0.0, slot;
    int same, rc;
    if (!isfinite(v))
        return FAST_INVALID;
    if (op->delta && float_attr(self, K, s, A_RUNNING, &running) < 0)
        return FAST_SLOW;
    Py_ssize_t n = series_len(self, K, s);
    if (n <= 0)
        return FAST_SLOW;
    if ((rc = check_slot(self, K, s, c, &slot, &same)) != 0)
        return rc < 0 ? -1 : FAST_SLOW;
    static const int arrays[6] = {A_TIMES, A_LAST, A_CSUMS, A_CCOUNTS, A_MINS, A_MAXS};
    Arrays a = {.count = 0};
    for (int i = 0; i < 6; i++)
        if ((rc = hold(&a, attr(self, K, s, arrays[i]), n)) != 0)
            return rc < 0 ? -1 : FAST_SLOW;
    if (op->delta) {
        v = running + v;
        if (set_float(self, K, s, A_RUNNING, v) < 0) {
            release(&a);
            return -1;
        }
    }
    if (take_slot(self, K, s, c, same) < 0) {
        release(&a);
        return -1;
    }
    Py_ssize_t last = n - 1;
    if (same) {
        dat(&a, 0)[last] = c->t;
        dat(&a, 1)[last] = v;
        dat(&a, 2)[last] += v;
        dat(&a, 3)[last] += 1;
        if (v < dat(&a, 4)[last])
            dat(&a, 4)[last] = v;
        if (v > dat(&a, 5)[last])
            dat(&a, 5)[last] = v;
        release(&a);
        return FAST_KEPT;
    }
    double csum = dat(&a, 2)[last] + v, ccount = dat(&a, 3)[last] + 1;
    release(&a);
    const double values[6] = {c->t, v, csum, ccount, v, v};
    for (int i = 0; i < 6; i++)
        if (append(attr(self, K, s, arrays[i]), values[i]) < 0)
            return -1;
    return FAST_KEPT;
}

static int fast_counter(Ingestor *self, PyObject *s, const Op *op, Clock *c) {
    const int K = K_COUNTER;
    double v = op->value, raw = 0.0, offset = 0.0, slot, total;
    uint64_t start = 0, point = 0;
    int same, rc;
    if (!isfinite(v) || v < 0)
        return FAST_INVALID;
    if (!op->delta) {
        if (u64_attr(self, K, s, A_POINT, &point) < 0)
            return FAST_SLOW;
        if (op->time_ns && op->time_ns <= point)
            return FAST_OUT_OF_ORDER;
        if (float_attr(self, K, s, A_RAW, &raw) < 0 || float_attr(self, K, s, A_OFFSET, &offset) < 0
            || u64_attr(self, K, s, A_START, &start) < 0)
            return FAST_SLOW;
    }
    Py_ssize_t n = series_len(self, K, s);
    if (n <= 0)
        return FAST_SLOW;
    if ((rc = check_slot(self, K, s, c, &slot, &same)) != 0)
        return rc < 0 ? -1 : FAST_SLOW;
    Arrays a = {.count = 0};
    if ((rc = hold(&a, attr(self, K, s, A_TIMES), n)) != 0 || (rc = hold(&a, attr(self, K, s, A_TOTALS), n)) != 0)
        return rc < 0 ? -1 : FAST_SLOW;
    if (op->delta) {
        total = dat(&a, 1)[n - 1] + v;
    } else {
        /* add_cumulative: a lower value or another start time is a reset */
        if (v < raw || (op->start_ns && start && op->start_ns != start)) {
            offset += raw;
            if (set_float(self, K, s, A_OFFSET, offset) < 0)
                goto error;
        }
        if (set_float(self, K, s, A_RAW, v) < 0 || set_u64(self, K, s, A_START, op->start_ns, start) < 0
            || set_u64(self, K, s, A_POINT, op->time_ns ? op->time_ns : point, point) < 0)
            goto error;
        total = v + offset;
    }
    if (take_slot(self, K, s, c, same) < 0)
        goto error;
    if (same) {
        dat(&a, 0)[n - 1] = c->t;
        dat(&a, 1)[n - 1] = total;
        release(&a);
        return FAST_KEPT;
    }
    release(&a);
    if (append(attr(self, K, s, A_TIMES), c->t) < 0 || append(attr(self, K, s, A_TOTALS), total) < 0)
        return -1;
    return FAST_KEPT;
error:
    release(&a);
    return -1;
}

static int fast_histogram(Ingestor *self, PyObject *s, const Op *op, Clock *c) {
    const int K = K_HIST;
    double slot;
    uint64_t start = 0, point = 0;
    int same, rc;
    if (op->nc != op->nb + 1 || isnan(op->sum))
        return FAST_INVALID;
    /* The bounds as the series has them, compared as bytes (else the Python loop compares the values, checks
     * them and starts the series over if they changed). */
    PyObject *layout = attr(self, K, s, A_BOUNDS), *stride = attr(self, K, s, A_STRIDE);
    const double *b = self->dbl + op->b0, *counts = self->dbl + op->c0;
    if (layout == NULL || !PyBytes_CheckExact(layout) || PyBytes_GET_SIZE(layout) != op->nb * 8
        || memcmp(PyBytes_AS_STRING(layout), b, (size_t)op->nb * 8) != 0 || stride == NULL || !PyLong_CheckExact(stride))
        return FAST_SLOW;
    Py_ssize_t w = PyLong_AsSsize_t(stride);
    if (w == -1 && PyErr_Occurred())
        PyErr_Clear();
    if (w != op->nb + 3)
        return FAST_SLOW;
    if (!op->delta) {
        if (u64_attr(self, K, s, A_POINT, &point) < 0)
            return FAST_SLOW;
        if (op->time_ns && op->time_ns <= point)
            return FAST_OUT_OF_ORDER;
        if (u64_attr(self, K, s, A_START, &start) < 0)
            return FAST_SLOW;
    }
    Py_ssize_t n = series_len(self, K, s);
    if (n <= 0)
        return FAST_SLOW;
    if ((rc = check_slot(self, K, s, c, &slot, &same)) != 0)
        return rc < 0 ? -1 : FAST_SLOW;
    Arrays a = {.count = 0};
    /* (raw and offsets only for a cumulative one: add_delta never reads them, and each is two more blocks of
     * memory to reach per point) */
    if ((rc = hold(&a, attr(self, K, s, A_TIMES), n)) != 0 || (rc = hold(&a, attr(self, K, s, A_DATA), n * w)) != 0
        || (!op->delta && ((rc = hold(&a, attr(self, K, s, A_RAW), w)) != 0
                           || (rc = hold(&a, attr(self, K, s, A_OFFSETS), w)) != 0)))
        return rc < 0 ? -1 : FAST_SLOW;
    if (grow((void **)&self->row, &self->cap_row, w, sizeof(double)) < 0) {
        release(&a);
        return -1;
    }
    double *row = self->row, *data = dat(&a, 1);
    double *lastrow = data + (n - 1) * w;
    /* the sample: bucket counts, count, sum */
    for (Py_ssize_t i = 0; i < w - 2; i++)
        row[i] = counts[i];
    row[w - 2] = op->count;
    row[w - 1] = op->sum;
    if (op->delta) {
        for (Py_ssize_t i = 0; i < w; i++)
            row[i] = lastrow[i] + row[i];
    } else {
        double *raw = dat(&a, 2), *offsets = dat(&a, 3);
        int reset = row[w - 2] < raw[w - 2] || (op->start_ns && start && op->start_ns != start);
        for (Py_ssize_t i = 0; i < w - 2 && !reset; i++)
            reset = row[i] < raw[i];
        if (reset)
            for (Py_ssize_t i = 0; i < w; i++)
                offsets[i] = offsets[i] + raw[i];
        for (Py_ssize_t i = 0; i < w; i++) {
            raw[i] = row[i];
            row[i] = row[i] + offsets[i];
        }
        if (set_u64(self, K, s, A_START, op->start_ns, start) < 0
            || set_u64(self, K, s, A_POINT, op->time_ns ? op->time_ns : point, point) < 0) {
            release(&a);
            return -1;
        }
    }
    if (take_slot(self, K, s, c, same) < 0) {
        release(&a);
        return -1;
    }
    if (same) {
        dat(&a, 0)[n - 1] = c->t;
        memcpy(lastrow, row, (size_t)w * sizeof(double));
        release(&a);
        return FAST_KEPT;
    }
    release(&a);
    if (append(attr(self, K, s, A_TIMES), c->t) < 0)
        return -1;
    PyObject *rb = PyBytes_FromStringAndSize((const char *)row, w * (Py_ssize_t)sizeof(double));
    if (rb == NULL)
        return -1;
    PyObject *r = PyObject_CallMethodOneArg(attr(self, K, s, A_DATA), s_frombytes, rb);
    Py_DECREF(rb);
    Py_XDECREF(r);
    return r == NULL ? -1 : FAST_KEPT;
}

static int fast(Ingestor *self, PyObject *s, const Op *op, Clock *c) {
    int kind = op->kind;
    if (s == NULL || Py_TYPE(s) != (PyTypeObject *)self->classes[kind] || attr(self, kind, s, A_KIND) != self->kinds[kind]
        || attr(self, kind, s, A_TL) == NULL)
        return FAST_SLOW;
    if (kind == K_GAUGE)
        return fast_gauge(self, s, op, c);
    if (kind == K_COUNTER)
        return fast_counter(self, s, op, c);
    return fast_histogram(self, s, op, c);
}

static inline int varint_len(uint64_t n) {
    int k = 1;
    for (; n >= 0x80; n >>= 7)
        k++;
    return k;
}

/* ((resource, scope), each attribute's KeyValue bytes after its length as a minimal varint, joined): the key
 * store.py builds (attributes_key), in one pass into one new bytes object. */
static PyObject *point_key(Ingestor *self, PyObject *origin, const Op *op) {
    const Span *spans = self->attrs + op->attr0;
    Py_ssize_t size = 0;
    for (Py_ssize_t i = 0; i < op->nattr; i++)
        size += varint_len((uint64_t)spans[i].n) + spans[i].n;
    PyObject *joined = PyBytes_FromStringAndSize(NULL, size);
    if (joined == NULL)
        return NULL;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(joined);
    for (Py_ssize_t i = 0; i < op->nattr; i++) {
        uint64_t n = (uint64_t)spans[i].n;
        for (; n >= 0x80; n >>= 7)
            *p++ = (unsigned char)(n | 0x80);
        *p++ = (unsigned char)n;
        memcpy(p, spans[i].p, (size_t)spans[i].n);
        p += spans[i].n;
    }
    PyObject *key = PyTuple_New(2);
    if (key == NULL) {
        Py_DECREF(joined);
        return NULL;
    }
    PyTuple_SET_ITEM(key, 0, Py_NewRef(origin));
    PyTuple_SET_ITEM(key, 1, joined);
    return key;
}

/* -- the index of series ----------------------------------------------------------------------------- */

/* The hash of a point's attributes (seeded with its origin's content hash), and the size of its
 * attributes_key bytes. */
static uint64_t attrs_hash(uint64_t oh, const Span *spans, Py_ssize_t n, Py_ssize_t *size) {
    uint64_t h = mix(oh, (uint64_t)n);
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        h = hash_bytes(h, spans[i].p, spans[i].n);
        total += varint_len((uint64_t)spans[i].n) + spans[i].n;
    }
    *size = total;
    return h;
}

/* Whether the bytes `attrs` are attributes_key of the spans (`size` long), compared in place. */
static int same_attrs(PyObject *attrs, const Span *spans, Py_ssize_t n, Py_ssize_t size) {
    if (PyBytes_GET_SIZE(attrs) != size)
        return 0;
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(attrs);
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t len = (uint64_t)spans[i].n;
        for (; len >= 0x80; len >>= 7)
            if (*p++ != (unsigned char)(len | 0x80))
                return 0;
        if (*p++ != (unsigned char)len || memcmp(p, spans[i].p, (size_t)spans[i].n) != 0)
            return 0;
        p += spans[i].n;
    }
    return 1;
}

static int same_origin(PyObject *a, PyObject *b) {
    if (a == b)
        return 1;
    int eq = PyObject_RichCompareBool(a, b, Py_EQ); /* (tuples of two bytes) */
    if (eq < 0)
        PyErr_Clear();
    return eq == 1;
}

/* Brings a table's state up to date (at each metric of the request, and after the slow path ran): a new
 * epoch when its `series` dict is another object or its `removed` count changed. */
static void table_state(Ingestor *self, Py_ssize_t t, PyObject *table, PyObject *dict) {
    TableState *ts = &self->tstate[t];
    PyObject *g = PyObject_GetAttr(table, s_removed);
    long long removed = g != NULL && PyLong_CheckExact(g) ? PyLong_AsLongLong(g) : -1;
    Py_XDECREF(g);
    if (PyErr_Occurred())
        PyErr_Clear(); /* (not a table the index can follow: not indexed) */
    ts->size = PyDict_GET_SIZE(dict);
    if (removed < 0) {
        self->stale |= ts->epoch != 0;
        ts->epoch = 0;
        Py_CLEAR(ts->dict);
        return;
    }
    if (ts->epoch == 0 || ts->dict != dict || ts->removed != removed) {
        self->stale |= ts->epoch != 0;
        ts->epoch = ++self->epochs;
        ts->removed = removed;
        Py_INCREF(dict);
        Py_XSETREF(ts->dict, dict);
    }
}

/* The series a point's key maps to, if the index has it (borrowed: the entry holds it), else NULL. */
static PyObject *index_find(Ingestor *self, uint64_t h, uint64_t epoch, PyObject *origin, const Span *spans,
                            Py_ssize_t n, Py_ssize_t size) {
    if (self->cap_index == 0)
        return NULL;
    Entry *e = &self->index[h & (uint64_t)(self->cap_index - 2)];
    for (int way = 0; way < 2; way++, e++)
        if (e->epoch == epoch && e->h == h && same_origin(e->origin, origin) && same_attrs(e->attrs, spans, n, size))
            return e->series;
    return NULL;
}

static void entry_clear(Entry *e) {
    PyObject *s = e->series, *k = e->key;
    memset(e, 0, sizeof(Entry));
    Py_XDECREF(s);
    Py_XDECREF(k);
}

/* Puts an entry in the newest way of its bucket (the newest there before goes to the other way). */
static void bucket_put(Entry *index, Py_ssize_t cap, Entry *fresh /* its references moved in */) {
    Entry *e = &index[fresh->h & (uint64_t)(cap - 2)];
    Entry old = e[1];
    e[1] = e[0];
    e[0] = *fresh;
    Py_XDECREF(old.series);
    Py_XDECREF(old.key);
}

/* Indexes series `s`, found in table `t` (of state `epoch`) under `key`, by the key it holds (its `key`
 * attribute), when that is the same key: the entry then holds no copy of it. */
static void index_put(Ingestor *self, uint64_t h, uint64_t epoch, Py_ssize_t t, PyObject *s, int kind,
                      PyObject *key) {
    PyObject *k = attr(self, kind, s, A_KEY);
    if (self->cap_index == 0 || k == NULL || !PyTuple_CheckExact(k) || PyTuple_GET_SIZE(k) != 2)
        return;
    PyObject *origin = PyTuple_GET_ITEM(k, 0), *attrs = PyTuple_GET_ITEM(k, 1), *want = PyTuple_GET_ITEM(key, 1);
    if (!PyBytes_CheckExact(attrs) || PyBytes_GET_SIZE(attrs) != PyBytes_GET_SIZE(want)
        || memcmp(PyBytes_AS_STRING(attrs), PyBytes_AS_STRING(want), (size_t)PyBytes_GET_SIZE(want)) != 0
        || !same_origin(origin, PyTuple_GET_ITEM(key, 0)))
        return;
    Entry fresh = {.h = h, .epoch = epoch, .series = Py_NewRef(s), .key = Py_NewRef(k), .origin = origin,
                   .attrs = attrs, .table = t};
    bucket_put(self->index, self->cap_index, &fresh);
}

/* After a call: the entries of tables whose epoch changed are released (they may hold series no table has
 * any more), and the index grows to twice the series of the tables (rehashed), up to INDEX_MAX entries. */
static void index_tidy(Ingestor *self) {
    if (self->stale) {
        self->stale = 0;
        for (Py_ssize_t i = 0; i < self->cap_index; i++) {
            Entry *e = &self->index[i];
            if (e->series != NULL && e->epoch != self->tstate[e->table].epoch)
                entry_clear(e);
        }
    }
    Py_ssize_t total = 0;
    for (Py_ssize_t t = 0; t < self->nnames; t++)
        total += self->tstate[t].size;
    Py_ssize_t need = total > INDEX_MAX / 2 ? INDEX_MAX : 2 * total;
    if (need <= self->cap_index || need < 2)
        return;
    Py_ssize_t cap = self->cap_index ? self->cap_index : 64;
    while (cap < need)
        cap *= 2;
    Entry *fresh = PyMem_Calloc((size_t)cap, sizeof(Entry));
    if (fresh == NULL)
        return; /* (not grown: the index is only a shortcut) */
    for (Py_ssize_t i = 0; i < self->cap_index; i++)
        if (self->index[i].series != NULL)
            bucket_put(fresh, cap, &self->index[i]);
    PyMem_Free(self->index);
    self->index = fresh;
    self->cap_index = cap;
}

static void index_free(Ingestor *self) {
    for (Py_ssize_t i = 0; i < self->cap_index; i++)
        entry_clear(&self->index[i]);
    PyMem_Free(self->index);
    self->index = NULL;
    self->cap_index = 0;
    for (Py_ssize_t t = 0; self->tstate != NULL && t < self->nnames; t++)
        Py_CLEAR(self->tstate[t].dict);
    PyMem_Free(self->tstate);
    self->tstate = NULL;
}

static int apply(Ingestor *self, PyObject *origins, PyObject *tables, Clock *c, PyObject *resource, PyObject *slow,
                 PyObject *result, Py_ssize_t counts[4]) {
    PyObject *table = NULL, *series = NULL, *origin = NULL, *last_res = NULL;
    int kind = 0, delta = 0, rc = -1;
    Py_ssize_t t = 0;
    uint64_t oh = 0;
    for (Py_ssize_t i = 0; i < self->nops; i++) {
        const Op *op = &self->ops[i];
        if (op->type == OP_METRIC) {
            Py_CLEAR(series);
            origin = PyList_GET_ITEM(origins, op->origin);
            oh = self->ohash[op->origin];
            PyObject *res = PyTuple_GET_ITEM(origin, 0);
            if (res != last_res) { /* the resource decoded (and cached) where the Python loop decodes it */
                PyObject *r = PyObject_CallOneArg(resource, res);
                if (r == NULL)
                    goto done;
                Py_DECREF(r);
                last_res = res;
            }
            t = op->table;
            table = PyTuple_GET_ITEM(tables, t);
            PyObject *changes = PyObject_GetAttr(table, s_changes);
            PyObject *more = changes ? PyNumber_Add(changes, one) : NULL;
            Py_XDECREF(changes);
            if (more == NULL || PyObject_SetAttr(table, s_changes, more) < 0) {
                Py_XDECREF(more);
                goto done;
            }
            Py_DECREF(more);
            if (op->unsupported)
                counts[3]++;
            if ((series = PyObject_GetAttr(table, s_series)) == NULL)
                goto done;
            if (!PyDict_CheckExact(series)) {
                PyErr_SetString(PyExc_TypeError, "MetricTable.series is a dict");
                goto done;
            }
            table_state(self, t, table, series);
            kind = op->kind;
            delta = op->delta;
            continue;
        }
        /* The series: from the index, else by the key in `table.series` (then indexed when the fast path
         * takes the point). */
        const Span *spans = self->attrs + op->attr0;
        uint64_t epoch = self->tstate[t].epoch, h = 0;
        Py_ssize_t size = 0;
        PyObject *s = NULL, *key = NULL;
        if (epoch != 0) {
            h = attrs_hash(oh, spans, op->nattr, &size);
            s = index_find(self, h, epoch, origin, spans, op->nattr, size);
        }
        const int found = s != NULL;
        if (!found) {
            if ((key = point_key(self, origin, op)) == NULL)
                goto done;
            s = PyDict_GetItemWithError(series, key);
            if (s == NULL && PyErr_Occurred()) {
                Py_DECREF(key);
                goto done;
            }
        }
        Py_XINCREF(s);
        int r = fast(self, s, op, c);
        if (r >= 0 && r != FAST_SLOW && !found && epoch != 0)
            index_put(self, h, epoch, t, s, kind, key);
        Py_XDECREF(s);
        if (r < 0) {
            Py_XDECREF(key);
            goto done;
        }
        if (r == FAST_SLOW) {
            if (key == NULL && (key = point_key(self, origin, op)) == NULL)
                goto done;
            PyObject *pb = PyBytes_FromStringAndSize((const char *)op->point.p, op->point.n);
            PyObject *out = NULL;
            if (pb != NULL) {
                PyObject *args[7] = {table, key, self->kinds[kind], delta ? Py_True : Py_False, pb, c->now, result};
                out = PyObject_Vectorcall(slow, args, 7, NULL);
                Py_DECREF(pb);
            }
            Py_DECREF(key);
            if (out == NULL)
                goto done;
            Py_DECREF(out);
            /* (the slow path may have added or replaced a series: the dict is the same object, and a replaced
             * one changed the table's `removed`) */
            table_state(self, t, table, series);
            continue;
        }
        Py_XDECREF(key);
        counts[r == FAST_KEPT ? 0 : r == FAST_INVALID ? 1 : 2]++;
    }
    rc = 0;
done:
    Py_XDECREF(series);
    return rc;
}

static PyObject *ingestor_ingest(Ingestor *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "ingest(raw, now, tables, resource, slow, result)");
        return NULL;
    }
    PyObject *now = args[1], *tables = args[2];
    if (!PyFloat_CheckExact(now) || !PyTuple_CheckExact(tables) || PyTuple_GET_SIZE(tables) != self->nnames) {
        PyErr_SetString(PyExc_TypeError, "now is a float, tables a tuple of one table per name");
        return NULL;
    }
    if (self->busy)
        Py_RETURN_NONE; /* (re-entered from a callback: the Python loop does it) */
    Py_buffer raw;
    if (PyObject_GetBuffer(args[0], &raw, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *origins = PyList_New(0), *out = NULL;
    if (origins == NULL) {
        PyBuffer_Release(&raw);
        return NULL;
    }
    self->busy = 1;
    self->nops = self->nattrs = self->ndbl = 0;
    Read r = {.self = self, .origins = origins, .origin = -1};
    const unsigned char *p = raw.buf;
    int rc = read_request(&r, p, p + raw.len);
    PyMem_Free(r.bounds);
    if (rc == 0) {
        Clock *c = PyMem_Calloc(1, sizeof(Clock));
        if (c == NULL) {
            PyErr_NoMemory();
            goto out;
        }
        c->now = now;
        c->t = PyFloat_AS_DOUBLE(now);
        Py_ssize_t counts[4] = {0, 0, 0, 0};
        if (apply(self, origins, tables, c, args[3], args[4], args[5], counts) == 0)
            out = Py_BuildValue("(nnnn)", counts[0], counts[1], counts[2], counts[3]);
        clock_clear(c);
        PyMem_Free(c);
        index_tidy(self);
    } else if (rc == 1) {
        out = Py_NewRef(Py_None);
    }
out:
    self->busy = 0;
    if (self->cap_ops * (Py_ssize_t)sizeof(Op) > SCRATCH_MAX || self->cap_attrs * (Py_ssize_t)sizeof(Span) > SCRATCH_MAX
        || self->cap_dbl * (Py_ssize_t)sizeof(double) > SCRATCH_MAX) {
        PyMem_Free(self->ops); /* (after a huge request: not kept for the next ones) */
        PyMem_Free(self->attrs);
        PyMem_Free(self->dbl);
        self->ops = NULL;
        self->attrs = NULL;
        self->dbl = NULL;
        self->cap_ops = self->cap_attrs = self->cap_dbl = 0;
    }
    Py_DECREF(origins);
    PyBuffer_Release(&raw);
    return out;
}

/* -- the type ------------------------------------------------------------------------------------------ */

static int ingestor_init(Ingestor *self, PyObject *args, PyObject *kwds) {
    PyObject *names, *classes, *kinds, *timelines, *next_tl, *op_append, *op_replace;
    if (!PyArg_ParseTuple(args, "O!O!O!O!OOO:Ingestor", &PyTuple_Type, &names, &PyTuple_Type, &classes, &PyTuple_Type,
                          &kinds, &PyDict_Type, &timelines, &next_tl, &op_append, &op_replace))
        return -1;
    if (PyTuple_GET_SIZE(classes) != NKINDS || PyTuple_GET_SIZE(kinds) != NKINDS || PyTuple_GET_SIZE(names) > INT32_MAX) {
        PyErr_SetString(PyExc_TypeError, "three series classes and three kinds");
        return -1;
    }
    self->empty_name = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++) {
        PyObject *n = PyTuple_GET_ITEM(names, i);
        if (!PyBytes_Check(n)) {
            PyErr_SetString(PyExc_TypeError, "a name is bytes");
            return -1;
        }
        if (PyBytes_GET_SIZE(n) == 0)
            self->empty_name = 1;
    }
    for (int k = 0; k < NKINDS; k++) {
        PyObject *cls = PyTuple_GET_ITEM(classes, k);
        if (!PyType_Check(cls)) {
            PyErr_SetString(PyExc_TypeError, "a series class is a class");
            return -1;
        }
        for (int a = 0; a < NATTRS; a++) {
            self->off[k][a] = -1;
            if (!ATTR_USED[k][a])
                continue;
            /* The member descriptor __slots__ made for the attribute: where instances hold it. */
            PyObject *d = PyObject_GetAttrString(cls, ATTR_NAMES[a]);
            if (d == NULL)
                return -1;
            int ok = Py_IS_TYPE(d, &PyMemberDescr_Type) && ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX
                     && PyType_IsSubtype((PyTypeObject *)cls, PyDescr_TYPE(d));
            if (ok)
                self->off[k][a] = ((PyMemberDescrObject *)d)->d_member->offset;
            Py_DECREF(d);
            if (!ok) {
                PyErr_Format(PyExc_TypeError, "%s.%s is not a __slots__ attribute", ((PyTypeObject *)cls)->tp_name,
                             ATTR_NAMES[a]);
                return -1;
            }
        }
        Py_XSETREF(self->classes[k], Py_NewRef(cls));
        Py_XSETREF(self->kinds[k], Py_NewRef(PyTuple_GET_ITEM(kinds, k)));
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Ingestor re-initialized while it ingests");
        return -1;
    }
    index_free(self); /* (the tables of another set of names) */
    if ((self->tstate = PyMem_Calloc((size_t)PyTuple_GET_SIZE(names) + 1, sizeof(TableState))) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_XSETREF(self->names, Py_NewRef(names));
    self->nnames = PyTuple_GET_SIZE(names);
    Py_XSETREF(self->timelines, Py_NewRef(timelines));
    Py_XSETREF(self->next_timeline, Py_NewRef(next_tl));
    Py_XSETREF(self->op_append, Py_NewRef(op_append));
    Py_XSETREF(self->op_replace, Py_NewRef(op_replace));
    return 0;
}

static void ingestor_dealloc(Ingestor *self) {
    Py_XDECREF(self->names);
    for (int k = 0; k < NKINDS; k++) {
        Py_XDECREF(self->classes[k]);
        Py_XDECREF(self->kinds[k]);
    }
    Py_XDECREF(self->timelines);
    Py_XDECREF(self->next_timeline);
    Py_XDECREF(self->op_append);
    Py_XDECREF(self->op_replace);
    PyMem_Free(self->ops);
    PyMem_Free(self->attrs);
    PyMem_Free(self->dbl);
    PyMem_Free(self->row);
    for (int i = 0; self->origins != NULL && i < ORIGIN_SLOTS; i++)
        Py_XDECREF(self->origins[i].obj);
    PyMem_Free(self->origins);
    PyMem_Free(self->ohash);
    index_free(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef ingestor_methods[] = {
    {"ingest", (PyCFunction)(void (*)(void))ingestor_ingest, METH_FASTCALL,
     "ingest(raw, now, tables, resource, slow, result) -> (kept, invalid, out_of_order, unsupported_type), or "
     "None: read the request with the Python loop"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject IngestorType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "exporters.pagerduty._pdwire.Ingestor",
    .tp_basicsize = sizeof(Ingestor),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The pagerduty exporter's ingest pass (see the comment at the top of _pdwire.c).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)ingestor_init,
    .tp_dealloc = (destructor)ingestor_dealloc,
    .tp_methods = ingestor_methods,
};

/* column_sums(arrays, start, width): [sum(a[start + k] for a in arrays) for k in range(width)], each column
 * added left to right from 0.0 in the order of `arrays` (what Python 3.11's sum() does with floats), for the
 * evaluator's histogram windows (evaluator._histogram_buckets): the bucket rows of hundreds of series summed
 * column by column without a Python float per bucket. [] for no arrays; None when one is not an array('d')
 * or is too short (the caller then sums in Python). */
static PyObject *py_column_sums(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyList_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "column_sums(list of arrays, start, width)");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]), width = PyLong_AsSsize_t(args[2]);
    if ((start == -1 || width == -1) && PyErr_Occurred())
        return NULL;
    PyObject *arrays = args[0];
    Py_ssize_t n = PyList_GET_SIZE(arrays);
    if (n == 0)
        return PyList_New(0);
    if (start < 0 || width < 0)
        Py_RETURN_NONE;
    double *acc = PyMem_Calloc((size_t)(width ? width : 1), sizeof(double));
    if (acc == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *a = PyList_GET_ITEM(arrays, i);
        Py_buffer v;
        if (Py_TYPE(a) != array_type || PyObject_GetBuffer(a, &v, PyBUF_FORMAT) < 0) {
            PyErr_Clear();
            PyMem_Free(acc);
            Py_RETURN_NONE;
        }
        int ok = v.itemsize == 8 && v.format != NULL && strcmp(v.format, "d") == 0 && v.len / 8 >= start + width;
        if (ok) {
            const double *d = (const double *)v.buf + start;
            for (Py_ssize_t k = 0; k < width; k++)
                acc[k] += d[k];
        }
        PyBuffer_Release(&v);
        if (!ok) {
            PyMem_Free(acc);
            Py_RETURN_NONE;
        }
    }
    PyObject *out = PyList_New(width);
    for (Py_ssize_t k = 0; out != NULL && k < width; k++) {
        PyObject *f = PyFloat_FromDouble(acc[k]);
        if (f == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, k, f);
    }
    PyMem_Free(acc);
    return out;
}

static PyMethodDef module_methods[] = {
    {"column_sums", (PyCFunction)(void (*)(void))py_column_sums, METH_FASTCALL,
     "column_sums(arrays, start, width) -> list[float] | None: the arrays' column sums over [start, start + width)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "exporters.pagerduty._pdwire", "The pagerduty exporter's ingest pass in C.", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__pdwire(void) {
    const uint16_t endian = 1;
    if (*(const unsigned char *)&endian != 1) {
        PyErr_SetString(PyExc_ImportError, "_pdwire reads fixed64 fields as little-endian");
        return NULL;
    }
    if (PyType_Ready(&IngestorType) < 0)
        return NULL;
    if (array_type == NULL) {
        PyObject *mod = PyImport_ImportModule("array");
        if (mod == NULL)
            return NULL;
        array_type = (PyTypeObject *)PyObject_GetAttrString(mod, "array"); /* (kept for the process) */
        Py_DECREF(mod);
        if (array_type == NULL)
            return NULL;
        s_append = PyUnicode_InternFromString("append");
        s_frombytes = PyUnicode_InternFromString("frombytes");
        s_changes = PyUnicode_InternFromString("changes");
        s_series = PyUnicode_InternFromString("series");
        s_removed = PyUnicode_InternFromString("removed");
        one = PyLong_FromLong(1);
        if (!s_append || !s_frombytes || !s_changes || !s_series || !s_removed || !one)
            return NULL;
    }
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Ingestor", (PyObject *)&IngestorType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

/* The loki exporter's push-body renderer for its usual config (raw lines, structured metadata, labels
 * only from resources): one pass over a serialized ExportLogsServiceRequest that writes each stream's
 * `values` as JSON text, so no per-record Python object is made.
 *
 * It is a transcription of PushBuilder._build_fast (exporters/loki/push.py), which stays the definition
 * and the fallback; tests/unit/exporters/loki/test_native.py checks that both give the same bytes. What
 * needs Python stays in Python and is asked once per distinct thing, not per record:
 *   - a resource's labels: `resources[resource_bytes]` (PushBuilder's bounded cache), once per ResourceLogs;
 *   - a severity text's level: `text_levels[text]`, once per distinct text in a request;
 *   - a (resource, level)'s stream: `stream_index(res, level)`, once per pair in a request;
 *   - an attribute's structured-metadata member: `make(kv_bytes)` -> None or (name, b'"name":"value"'),
 *     kept in this object's own table keyed by the attribute's bytes (bounded like PushBuilder's caches).
 *
 * `render` answers None, and the caller takes the Python path, for anything it does not cover exactly:
 * a body that is not one non-empty string, a message field written twice (protobuf merges those), a
 * known field with another wire type, two metadata members of one record with the same name, invalid
 * UTF-8 in a string it reads, wire it cannot read (pipeline/_otlpwire.h is stricter than protobuf), or a
 * render already under way on this object (a callback let another thread in). Nothing here is looser
 * than the Python path, which then decides with the protobuf parser's own rules.
 *
 * JSON strings are escaped as orjson escapes them (", \, \b \t \n \f \r, other controls as \u00xx;
 * nothing else), so a body's bytes equal PushBuilder's.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "../../pipeline/_otlpwire.h"

#define MAX_TS 0x7FFFFFFFFFFFFFFFull
#define MAX_MEMBERS 64 /* metadata members of one record checked for equal names; more -> Python */

/* -- growable byte buffer ------------------------------------------------------------------------ */

typedef struct {
    char *p;
    size_t n, cap;
} Buf;

static int buf_grow(Buf *b, size_t more) {
    if (b->n + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + more)
        cap *= 2;
    char *p = PyMem_Realloc(b->p, cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline int buf_put(Buf *b, const void *s, size_t n) {
    if (buf_grow(b, n) < 0)
        return -1;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    return 0;
}

#define BUF_LIT(b, s) buf_put((b), (s), sizeof(s) - 1)

/* A JSON string (with its quotes) of the UTF-8 text s[0:n], escaped as orjson escapes. */
static int buf_json_string(Buf *b, const unsigned char *s, size_t n) {
    if (buf_grow(b, 6 * n + 2) < 0)
        return -1;
    char *w = b->p + b->n;
    *w++ = '"';
    w = ow_json_escape(w, s, n);
    *w++ = '"';
    b->n = (size_t)(w - b->p);
    return 0;
}

static int buf_hex(Buf *b, const unsigned char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    if (buf_grow(b, 2 * n) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        b->p[b->n++] = hex[s[i] >> 4];
        b->p[b->n++] = hex[s[i] & 15];
    }
    return 0;
}

static int buf_u64(Buf *b, uint64_t v) {
    char tmp[20];
    int k = 0;
    do {
        tmp[k++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    if (buf_grow(b, (size_t)k) < 0)
        return -1;
    while (k)
        b->p[b->n++] = tmp[--k];
    return 0;
}

/* -- the attribute table: KeyValue bytes -> its metadata member ----------------------------------- */

typedef struct {
    uint64_t hash;
    Py_ssize_t keylen, fraglen, namelen; /* fraglen -1: the attribute gives no member (empty value) */
    char data[];                         /* key, then fragment, then name */
} Entry;

static uint64_t hash_bytes(const unsigned char *p, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDull;
        h ^= h >> 32;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
    return h ^ (h >> 29);
}

typedef struct {
    PyObject_HEAD
    Entry **slots;
    size_t cap, count, limit;
    int busy;
    PyObject *make;        /* KeyValue bytes -> None | (name: str, fragment: bytes) */
    PyObject *resources;   /* resource bytes -> info with `fixed_level` */
    PyObject *text_levels; /* severity text -> level */
    PyObject *number_levels; /* tuple: severity number -> level, for 0..len-1 */
    PyObject *unknown;     /* the level of any other number */
    PyObject *now_ns;      /* () -> int */
    PyObject *fixed_level_name;
} Renderer;

static void table_clear(Renderer *r) {
    for (size_t i = 0; i < r->cap; i++) {
        PyMem_Free(r->slots[i]);
        r->slots[i] = NULL;
    }
    r->count = 0;
}

static int table_grow(Renderer *r) {
    size_t cap = r->cap * 2;
    Entry **slots = PyMem_Calloc(cap, sizeof(Entry *));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < r->cap; i++) {
        Entry *e = r->slots[i];
        if (e == NULL)
            continue;
        size_t j = (size_t)e->hash & (cap - 1);
        while (slots[j] != NULL)
            j = (j + 1) & (cap - 1);
        slots[j] = e;
    }
    PyMem_Free(r->slots);
    r->slots = slots;
    r->cap = cap;
    return 0;
}

/* The entry of attribute bytes p[0:n], asking `make` on a miss; NULL with an exception, or with
 * Entries never move or die during a render (the table is only emptied when a render starts). */
static Entry *table_get(Renderer *r, const unsigned char *p, size_t n) {
    uint64_t h = hash_bytes(p, n);
    size_t j = (size_t)h & (r->cap - 1);
    for (Entry *e; (e = r->slots[j]) != NULL; j = (j + 1) & (r->cap - 1))
        if (e->hash == h && (size_t)e->keylen == n && memcmp(e->data, p, n) == 0)
            return e;
    PyObject *key = PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)n);
    if (key == NULL)
        return NULL;
    PyObject *made = PyObject_CallOneArg(r->make, key);
    Py_DECREF(key);
    if (made == NULL)
        return NULL;
    const char *frag = NULL, *name = NULL;
    Py_ssize_t fraglen = -1, namelen = 0;
    if (made != Py_None) {
        if (!PyTuple_Check(made) || PyTuple_GET_SIZE(made) != 2 || !PyBytes_Check(PyTuple_GET_ITEM(made, 1)) ||
            (name = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(made, 0), &namelen)) == NULL) {
            Py_DECREF(made);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "make must return None or (str, bytes)");
            return NULL;
        }
        frag = PyBytes_AS_STRING(PyTuple_GET_ITEM(made, 1));
        fraglen = PyBytes_GET_SIZE(PyTuple_GET_ITEM(made, 1));
    }
    /* `make` ran Python: another thread may have rendered meanwhile, but never with this table (busy). */
    size_t size = n + (size_t)(fraglen > 0 ? fraglen : 0) + (size_t)namelen;
    Entry *e = PyMem_Malloc(sizeof(Entry) + size);
    if (e == NULL) {
        Py_DECREF(made);
        PyErr_NoMemory();
        return NULL;
    }
    e->hash = h;
    e->keylen = (Py_ssize_t)n;
    e->fraglen = fraglen;
    e->namelen = namelen;
    memcpy(e->data, p, n);
    if (fraglen > 0)
        memcpy(e->data + n, frag, (size_t)fraglen);
    if (namelen)
        memcpy(e->data + n + (fraglen > 0 ? fraglen : 0), name, (size_t)namelen);
    Py_DECREF(made);
    if ((r->count + 1) * 2 > r->cap && table_grow(r) < 0) {
        PyMem_Free(e);
        return NULL;
    }
    j = (size_t)h & (r->cap - 1);
    while (r->slots[j] != NULL)
        j = (j + 1) & (r->cap - 1);
    r->slots[j] = e;
    r->count++;
    return e;
}

static inline const char *entry_frag(const Entry *e) { return e->data + e->keylen; }
static inline const char *entry_name(const Entry *e) {
    return e->data + e->keylen + (e->fraglen > 0 ? e->fraglen : 0);
}

/* -- one render ---------------------------------------------------------------------------------- */

typedef struct {
    PyObject *res, *level; /* owned */
    size_t stream;
} Pair;

typedef struct {
    Buf out;
    Py_ssize_t entries;
} StreamOut;

typedef struct {
    Renderer *r;
    PyObject *stream_index;
    Pair *pairs;
    size_t npairs, cappairs;
    size_t *slots; /* a hash table of the pairs: index + 1 into `pairs`, 0 empty; `capslots` a power of two */
    size_t capslots, last; /* last: the pair of the previous record, + 1 */
    StreamOut *streams;
    size_t nstreams, capstreams;
    const Entry **members;
    size_t capmembers;
    /* the last distinct severity texts of this render and their levels (owned) */
    struct { const unsigned char *p; size_t n; PyObject *level; } texts[8];
    size_t ntexts;
    uint64_t now;
    Py_ssize_t entries;
    int fallback;
} Render;

static void render_free(Render *st) {
    for (size_t i = 0; i < st->npairs; i++) {
        Py_DECREF(st->pairs[i].res);
        Py_DECREF(st->pairs[i].level);
    }
    PyMem_Free(st->pairs);
    PyMem_Free(st->slots);
    for (size_t i = 0; i < st->nstreams; i++)
        PyMem_Free(st->streams[i].out.p);
    PyMem_Free(st->streams);
    PyMem_Free(st->members);
    for (size_t i = 0; i < st->ntexts; i++)
        Py_DECREF(st->texts[i].level);
}

static size_t pair_hash(const PyObject *res, const PyObject *level) {
    uint64_t h = (uint64_t)(uintptr_t)res * 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)level * 0xC2B2AE3D27D4EB4Full;
    return (size_t)(h ^ (h >> 29));
}

/* Puts pair i (0-based) into the hash table, growing it to keep it at most half full. */
static int pair_slot(Render *st, size_t i) {
    if (2 * (st->npairs + 1) > st->capslots) {
        size_t cap = st->capslots ? 2 * st->capslots : 32;
        size_t *slots = PyMem_Calloc(cap, sizeof(size_t));
        if (slots == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (size_t k = 0; k < st->npairs; k++) {
            size_t j = pair_hash(st->pairs[k].res, st->pairs[k].level) & (cap - 1);
            while (slots[j])
                j = (j + 1) & (cap - 1);
            slots[j] = k + 1;
        }
        PyMem_Free(st->slots);
        st->slots = slots;
        st->capslots = cap;
    }
    size_t j = pair_hash(st->pairs[i].res, st->pairs[i].level) & (st->capslots - 1);
    while (st->slots[j])
        j = (j + 1) & (st->capslots - 1);
    st->slots[j] = i + 1;
    return 0;
}

/* The stream of (res, level): asked of Python once per pair in a render, then found by hash (a request
 * of as many streams as records must not cost records x streams). -1 with an exception. */
static Py_ssize_t stream_of(Render *st, PyObject *res, PyObject *level) {
    if (st->last && st->pairs[st->last - 1].res == res && st->pairs[st->last - 1].level == level)
        return (Py_ssize_t)st->pairs[st->last - 1].stream;
    if (st->capslots)
        for (size_t j = pair_hash(res, level) & (st->capslots - 1); st->slots[j]; j = (j + 1) & (st->capslots - 1)) {
            Pair *pr = &st->pairs[st->slots[j] - 1];
            if (pr->res == res && pr->level == level) {
                st->last = st->slots[j];
                return (Py_ssize_t)pr->stream;
            }
        }
    PyObject *got = PyObject_CallFunctionObjArgs(st->stream_index, res, level, NULL);
    if (got == NULL)
        return -1;
    Py_ssize_t idx = PyLong_AsSsize_t(got);
    Py_DECREF(got);
    if (idx < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "stream_index must return a non-negative int");
        return -1;
    }
    if (st->npairs == st->cappairs) {
        size_t cap = st->cappairs ? 2 * st->cappairs : 8;
        Pair *p = PyMem_Realloc(st->pairs, cap * sizeof(Pair));
        if (p == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        st->pairs = p;
        st->cappairs = cap;
    }
    while ((size_t)idx >= st->nstreams) {
        if (st->nstreams == st->capstreams) {
            size_t cap = st->capstreams ? 2 * st->capstreams : 8;
            StreamOut *s = PyMem_Realloc(st->streams, cap * sizeof(StreamOut));
            if (s == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            st->streams = s;
            st->capstreams = cap;
        }
        st->streams[st->nstreams++] = (StreamOut){{NULL, 0, 0}, 0};
    }
    st->pairs[st->npairs] = (Pair){res, level, (size_t)idx};
    if (pair_slot(st, st->npairs) < 0)
        return -1;
    Py_INCREF(res);
    Py_INCREF(level);
    st->last = ++st->npairs;
    return idx;
}

/* The level of severity text p[0:n] (non-empty), a new reference; the first eight distinct texts of a
 * render are remembered. NULL: an exception, or st->fallback set (invalid UTF-8). */
static PyObject *text_level(Render *st, const unsigned char *p, size_t n) {
    for (size_t i = 0; i < st->ntexts; i++)
        if (st->texts[i].n == n && memcmp(st->texts[i].p, p, n) == 0)
            return Py_NewRef(st->texts[i].level);
    PyObject *text = PyUnicode_DecodeUTF8((const char *)p, (Py_ssize_t)n, "strict");
    if (text == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
            return NULL;
        PyErr_Clear();
        st->fallback = 1;
        return NULL;
    }
    PyObject *level = PyObject_GetItem(st->r->text_levels, text);
    Py_DECREF(text);
    if (level != NULL && st->ntexts < 8) {
        st->texts[st->ntexts].p = p;
        st->texts[st->ntexts].n = n;
        st->texts[st->ntexts++].level = Py_NewRef(level);
    }
    return level;
}

/* The level of a severity number, a new reference. */
static PyObject *number_level(Renderer *r, int32_t number) {
    if (number >= 0 && number < PyTuple_GET_SIZE(r->number_levels))
        return Py_NewRef(PyTuple_GET_ITEM(r->number_levels, number));
    return Py_NewRef(r->unknown);
}

typedef struct {
    uint64_t time, observed;
    int32_t number;
    const unsigned char *text, *line, *trace, *span;
    size_t ntext, nline, ntrace, nspan;
    size_t nmembers; /* attribute entries in st->members */
    int body_seen;
} Record;

static int add_member(Render *st, const Entry *e, size_t *k) {
    if (*k == st->capmembers) {
        size_t cap = st->capmembers ? 2 * st->capmembers : 16;
        const Entry **m = PyMem_Realloc(st->members, cap * sizeof(Entry *));
        if (m == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        st->members = m;
        st->capmembers = cap;
    }
    st->members[(*k)++] = e;
    return 0;
}

/* Reads the body: exactly one field, a non-empty valid string (anything else: the Python path). */
static void read_body(Render *st, Record *rec, const unsigned char *p, const unsigned char *end) {
    uint32_t field;
    int wt;
    uint64_t n;
    if (rec->body_seen || p == end || ow_tag(p, end, &p, &field, &wt) < 0 || field != 1 || wt != 2 ||
        ow_varint(p, end, &p, &n) < 0 || n == 0 || n != (uint64_t)(end - p) || !ow_utf8_valid(p, p + n)) {
        st->fallback = 1;
        return;
    }
    rec->body_seen = 1;
    rec->line = p;
    rec->nline = (size_t)n;
}

/* One LogRecord's fields into *rec (its metadata entries appended to st->members). -1: error. */
static int read_record(Render *st, Record *rec, const unsigned char *p, const unsigned char *end) {
    size_t k = 0;
    while (p < end && !st->fallback) {
        uint32_t field;
        int wt;
        const unsigned char *v;
        uint64_t n;
        if (ow_tag(p, end, &p, &field, &wt) < 0)
            goto refuse;
        switch (field) {
        case 1: case 11: /* time_unix_nano, observed_time_unix_nano: fixed64 */
            if (wt != 1 || end - p < 8)
                goto refuse;
            n = 0;
            for (int i = 7; i >= 0; i--)
                n = n << 8 | p[i];
            *(field == 1 ? &rec->time : &rec->observed) = n;
            p += 8;
            continue;
        case 2: /* severity_number: an enum, read as int32 */
            if (wt != 0 || ow_varint(p, end, &p, &n) < 0)
                goto refuse;
            rec->number = (int32_t)(uint32_t)n;
            continue;
        case 3: case 5: case 6: case 9: case 10:
            if (wt != 2 || ow_varint(p, end, &p, &n) < 0 || n > (uint64_t)(end - p))
                goto refuse;
            v = p;
            p += n;
            if (field == 3) { /* checked here even where a resource's `level` label makes it unused */
                if (!ow_utf8_valid(v, v + n))
                    goto refuse;
                rec->text = v;
                rec->ntext = (size_t)n;
            } else if (field == 5) {
                read_body(st, rec, v, p);
            } else if (field == 6) {
                const Entry *e = table_get(st->r, v, (size_t)n);
                if (e == NULL)
                    return -1;
                if (e->fraglen >= 0 && add_member(st, e, &k) < 0)
                    return -1;
            } else if (field == 9) {
                rec->trace = v;
                rec->ntrace = (size_t)n;
            } else {
                rec->span = v;
                rec->nspan = (size_t)n;
            }
            continue;
        default:
            if (ow_skip(p, end, wt, &p) < 0)
                goto refuse;
        }
    }
    rec->nmembers = k;
    if (!rec->body_seen)
        st->fallback = 1; /* no body: the line comes from PushBuilder._line */
    return 0;
refuse:
    st->fallback = 1;
    return 0;
}

static int same_name(const Entry *e, const char *name, size_t n) {
    return (size_t)e->namelen == n && memcmp(entry_name(e), name, n) == 0;
}

/* Writes one record's entry into its stream's buffer. */
static int write_record(Render *st, Record *rec, PyObject *res, int fixed_level) {
    size_t k = rec->nmembers;
    if (k > MAX_MEMBERS) {
        st->fallback = 1;
        return 0;
    }
    for (size_t i = 0; i < k; i++) { /* a name twice: Python's dict keeps the first place, the last value */
        const Entry *e = st->members[i];
        if ((rec->ntrace && same_name(e, "trace_id", 8)) || (rec->nspan && same_name(e, "span_id", 7))) {
            st->fallback = 1;
            return 0;
        }
        for (size_t j = 0; j < i; j++)
            if (same_name(st->members[j], entry_name(e), (size_t)e->namelen)) {
                st->fallback = 1;
                return 0;
            }
    }
    PyObject *level;
    if (fixed_level)
        level = PyUnicode_New(0, 0); /* "": a resource label named `level` replaces the default one */
    else if (rec->ntext)
        level = text_level(st, rec->text, rec->ntext);
    else
        level = number_level(st->r, rec->number);
    if (level == NULL)
        return st->fallback ? 0 : -1;
    Py_ssize_t idx = stream_of(st, res, level);
    Py_DECREF(level); /* stream_of keeps a reference for its pair */
    if (idx < 0)
        return -1;
    uint64_t ts = rec->time;
    if (ts == 0 || ts > MAX_TS) {
        ts = rec->observed;
        if (ts == 0 || ts > MAX_TS) {
            if (st->now == 0) {
                PyObject *now = PyObject_CallNoArgs(st->r->now_ns);
                if (now == NULL)
                    return -1;
                st->now = PyLong_AsUnsignedLongLong(now);
                Py_DECREF(now);
                if (PyErr_Occurred())
                    return -1;
            }
            ts = st->now;
        }
    }
    Buf *b = &st->streams[idx].out;
    if (buf_put(b, b->n ? ",[\"" : "[[\"", 3) < 0 || buf_u64(b, ts) < 0 || BUF_LIT(b, "\",") < 0 ||
        buf_json_string(b, rec->line, rec->nline) < 0)
        return -1;
    if (k || rec->ntrace || rec->nspan) {
        if (BUF_LIT(b, ",{") < 0)
            return -1;
        int first = 1;
        for (size_t i = 0; i < k; i++) {
            const Entry *e = st->members[i];
            if ((!first && BUF_LIT(b, ",") < 0) || buf_put(b, entry_frag(e), (size_t)e->fraglen) < 0)
                return -1;
            first = 0;
        }
        if (rec->ntrace && ((!first && BUF_LIT(b, ",") < 0) || BUF_LIT(b, "\"trace_id\":\"") < 0 ||
                            buf_hex(b, rec->trace, rec->ntrace) < 0 || BUF_LIT(b, "\"") < 0))
            return -1;
        first = first && !rec->ntrace;
        if (rec->nspan && ((!first && BUF_LIT(b, ",") < 0) || BUF_LIT(b, "\"span_id\":\"") < 0 ||
                           buf_hex(b, rec->span, rec->nspan) < 0 || BUF_LIT(b, "\"") < 0))
            return -1;
        if (BUF_LIT(b, "}") < 0)
            return -1;
    }
    if (BUF_LIT(b, "]") < 0)
        return -1;
    st->streams[idx].entries++;
    st->entries++;
    return 0;
}

/* The next length-delimited field `want` in [*p, end) (others skipped); 1 found, 0 at the end, -1 refuse. */
static int next_field(const unsigned char **p, const unsigned char *end, uint32_t want, const unsigned char **v,
                      const unsigned char **vend) {
    while (*p < end) {
        uint32_t field;
        int wt;
        uint64_t n;
        if (ow_tag(*p, end, p, &field, &wt) < 0)
            return -1;
        if (field != want) {
            if (ow_skip(*p, end, wt, p) < 0)
                return -1;
            continue;
        }
        if (wt != 2 || ow_varint(*p, end, p, &n) < 0 || n > (uint64_t)(end - *p))
            return -1;
        *v = *p;
        *p += n;
        *vend = *p;
        return 1;
    }
    return 0;
}

static int render_scope(Render *st, const unsigned char *p, const unsigned char *end, PyObject *res,
                        int fixed_level) {
    const unsigned char *v, *vend;
    int got;
    while ((got = next_field(&p, end, 2, &v, &vend)) == 1) {
        Record rec = {0};
        if (read_record(st, &rec, v, vend) < 0)
            return -1;
        if (st->fallback)
            return 0;
        if (write_record(st, &rec, res, fixed_level) < 0)
            return -1;
        if (st->fallback)
            return 0;
    }
    if (got < 0)
        st->fallback = 1;
    return 0;
}

static int render_resource_logs(Render *st, const unsigned char *p, const unsigned char *end) {
    /* the resource first, wherever it is written; written twice it would be merged: the Python path */
    const unsigned char *q = p, *v, *vend, *rv = NULL, *rend = NULL;
    int got = 0;
    while ((got = next_field(&q, end, 1, &v, &vend)) == 1) {
        if (rv != NULL) {
            st->fallback = 1;
            return 0;
        }
        rv = v;
        rend = vend;
    }
    if (got < 0) {
        st->fallback = 1;
        return 0;
    }
    PyObject *key = PyBytes_FromStringAndSize((const char *)rv, rv ? rend - rv : 0);
    if (key == NULL)
        return -1;
    PyObject *res = PyObject_GetItem(st->r->resources, key);
    Py_DECREF(key);
    if (res == NULL)
        return -1;
    PyObject *fixed = PyObject_GetAttr(res, st->r->fixed_level_name);
    int fixed_level = fixed == NULL ? -1 : PyObject_IsTrue(fixed);
    Py_XDECREF(fixed);
    int rc = -1;
    if (fixed_level >= 0) {
        rc = 0;
        while (rc == 0 && !st->fallback && (got = next_field(&p, end, 2, &v, &vend)) == 1)
            rc = render_scope(st, v, vend, res, fixed_level);
        if (rc == 0 && got < 0)
            st->fallback = 1;
    }
    Py_DECREF(res); /* stream_of keeps its own reference for the pairs it saw */
    return rc;
}

PyDoc_STRVAR(render_doc,
"render(raw, stream_index) -> ([(values_json, entries), ...], entries) | None\n\n"
"The streams' `values` arrays of serialized ExportLogsServiceRequest `raw`, indexed as stream_index(res, level)\n"
"numbered them; None when the Python path must take this request.");

static PyObject *Renderer_render(Renderer *r, PyObject *args) {
    Py_buffer raw;
    PyObject *stream_index;
    if (!PyArg_ParseTuple(args, "y*O:render", &raw, &stream_index))
        return NULL;
    if (r->busy) { /* a callback of a render let this thread in: its table is in use */
        PyBuffer_Release(&raw);
        Py_RETURN_NONE;
    }
    r->busy = 1;
    if (r->count >= r->limit)
        table_clear(r);
    Render st = {0};
    st.r = r;
    st.stream_index = stream_index;
    const unsigned char *p = raw.buf, *end = p + raw.len, *v, *vend;
    int got = 0, rc = 0;
    while (rc == 0 && !st.fallback && (got = next_field(&p, end, 1, &v, &vend)) == 1)
        rc = render_resource_logs(&st, v, vend);
    if (rc == 0 && got < 0)
        st.fallback = 1;
    PyObject *result = NULL;
    if (rc == 0 && st.fallback) {
        result = Py_NewRef(Py_None);
    } else if (rc == 0) {
        PyObject *list = PyList_New((Py_ssize_t)st.nstreams);
        for (size_t i = 0; list != NULL && i < st.nstreams; i++) {
            Buf *b = &st.streams[i].out;
            PyObject *item = NULL;
            if (b->n == 0 || buf_put(b, "]", 1) == 0) {
                item = b->n ? Py_BuildValue("(y#n)", b->p, (Py_ssize_t)b->n, st.streams[i].entries)
                            : Py_BuildValue("(y#n)", "[]", (Py_ssize_t)2, (Py_ssize_t)0);
            }
            if (item == NULL)
                Py_CLEAR(list);
            else
                PyList_SET_ITEM(list, (Py_ssize_t)i, item);
        }
        if (list != NULL) {
            result = Py_BuildValue("(Nn)", list, st.entries);
        }
    }
    render_free(&st);
    r->busy = 0;
    PyBuffer_Release(&raw);
    return result;
}

static PyObject *Renderer_cached(Renderer *r, PyObject *unused) {
    return PyLong_FromSize_t(r->count);
}

static int Renderer_init(Renderer *r, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"make", "resources", "text_levels", "number_levels", "unknown", "now_ns", "limit", NULL};
    PyObject *make, *resources, *text_levels, *number_levels, *unknown, *now_ns;
    Py_ssize_t limit;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOO!UOn:Renderer", kwlist, &make, &resources, &text_levels,
                                     &PyTuple_Type, &number_levels, &unknown, &now_ns, &limit))
        return -1;
    if (limit < 1) {
        PyErr_SetString(PyExc_ValueError, "limit must be positive");
        return -1;
    }
    if (r->slots == NULL) {
        r->cap = 1024;
        r->slots = PyMem_Calloc(r->cap, sizeof(Entry *));
        if (r->slots == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    r->limit = (size_t)limit;
    Py_XSETREF(r->make, Py_NewRef(make));
    Py_XSETREF(r->resources, Py_NewRef(resources));
    Py_XSETREF(r->text_levels, Py_NewRef(text_levels));
    Py_XSETREF(r->number_levels, Py_NewRef(number_levels));
    Py_XSETREF(r->unknown, Py_NewRef(unknown));
    Py_XSETREF(r->now_ns, Py_NewRef(now_ns));
    if (r->fixed_level_name == NULL && (r->fixed_level_name = PyUnicode_InternFromString("fixed_level")) == NULL)
        return -1;
    return 0;
}

static int Renderer_traverse(Renderer *r, visitproc visit, void *arg) {
    Py_VISIT(r->make);
    Py_VISIT(r->resources);
    Py_VISIT(r->text_levels);
    Py_VISIT(r->number_levels);
    Py_VISIT(r->unknown);
    Py_VISIT(r->now_ns);
    return 0;
}

static int Renderer_clear(Renderer *r) {
    Py_CLEAR(r->make);
    Py_CLEAR(r->resources);
    Py_CLEAR(r->text_levels);
    Py_CLEAR(r->number_levels);
    Py_CLEAR(r->unknown);
    Py_CLEAR(r->now_ns);
    Py_CLEAR(r->fixed_level_name);
    return 0;
}

static void Renderer_dealloc(Renderer *r) {
    PyObject_GC_UnTrack(r);
    Renderer_clear(r);
    if (r->slots != NULL) {
        table_clear(r);
        PyMem_Free(r->slots);
    }
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static PyMethodDef Renderer_methods[] = {
    {"render", (PyCFunction)Renderer_render, METH_VARARGS, render_doc},
    {"cached", (PyCFunction)Renderer_cached, METH_NOARGS, "How many attributes the table holds."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RendererType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "exporters.loki._lokiwire.Renderer",
    .tp_basicsize = sizeof(Renderer),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Renderer(make, resources, text_levels, number_levels, unknown, now_ns, limit): see the module.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Renderer_init,
    .tp_dealloc = (destructor)Renderer_dealloc,
    .tp_traverse = (traverseproc)Renderer_traverse,
    .tp_clear = (inquiry)Renderer_clear,
    .tp_methods = Renderer_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_lokiwire", "The loki exporter's push-body renderer (see _lokiwire.c).", -1, NULL,
};

PyMODINIT_FUNC PyInit__lokiwire(void) {
    if (PyType_Ready(&RendererType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Renderer", (PyObject *)&RendererType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

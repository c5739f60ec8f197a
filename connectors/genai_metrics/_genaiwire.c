/*
 * connectors.genai_metrics._genaiwire: genai_metrics' span reader in C (one pass over a request).
 *
 * `Reader(groups, counts, needles)` is built once per connector; `Reader.read(raw)` walks one
 * serialized ExportTraceServiceRequest and returns (genai, roots), two lists of records, or None
 * when the bytes are anything but plain well-formed OTLP (a truncated or malformed field, a wire
 * type that does not match a known field, groups, a non-ASCII attribute key, nesting it does not
 * know): the caller then reads the request with the Python reader (spans.read_py), which does the
 * same work and decides what is malformed. So whenever this returns records they are what the
 * Python reader returns for the same bytes (tests/unit/connectors/genai_metrics/test_spans.py
 * checks both on the same cases and on arbitrary bytes).
 *
 * Which spans:
 *   genai  every span whose bytes hold one of `needles` (the serialized keys of
 *          gen_ai.operation.name, mcp.method.name, gen_ai.system), in request order;
 *   roots  every other span without a parent span id; a span whose bytes hold a parent span id where
 *          SDKs put it (tag 0x22 length 8 at offset 28) is not parsed at all.
 * A record is a tuple: (resource bytes, trace id, span id, parent span id, kind, start, end,
 * status code, then one value per group). `groups` is a tuple of tuples of attribute keys
 * (UTF-8 bytes), newest spelling first: a group's value is the serialized AnyValue of the first
 * key of the group that the span's attributes hold (a key written twice: its last value), else
 * None. For the groups listed in `counts` a value that is a non-negative int_value varint is
 * returned as an int (anything else stays bytes). The resource bytes object is shared by the
 * records of one ResourceSpans (b"" when it has none).
 *
 * `Reader.parsed` counts the GenAI spans parsed (the others were searched for the needles, and those
 * that may be roots parsed for their parent span id).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../../pipeline/_otlpwire.h"

#define MAX_GROUPS 64
#define MAX_KEYS 256
#define MAX_NEEDLES 8
#define MAX_KEYLEN 255
#define INTERN_SLOTS 4096 /* attribute values kept for reuse (direct-mapped by content) */
#define INTERN_MAX 96     /* longer values are never reused */

typedef struct {
    const char *ptr;
    Py_ssize_t len;
    int group;
    int rank;
} Key;

typedef struct {
    PyObject_HEAD
    PyObject *groups;   /* keeps the key bytes alive */
    PyObject *needles;
    int ngroups;
    int nkeys;
    int nneedles;
    int needles_at_lf; /* every needle is 0x0A, one length byte, then that many bytes */
    Key keys[MAX_KEYS];
    const char *needle[MAX_NEEDLES];
    Py_ssize_t needle_len[MAX_NEEDLES];
    unsigned char is_count[MAX_GROUPS];
    unsigned short by_len[MAX_KEYLEN + 2]; /* the keys of length n: by_len_order[by_len[n] .. by_len[n + 1]) */
    unsigned char by_len_order[MAX_KEYS]; /* key indexes by length (stable: in `keys` order within a length) */
    Py_ssize_t parsed;
    PyObject **interned; /* INTERN_SLOTS bytes objects (or NULL) */
} Reader;

/* -- wire primitives (0 on success, -1 on anything odd) -------------------------------------------- */

/* Reads a length-delimited value: [*s, *e). */
static inline int rd_ld(const unsigned char *p, const unsigned char *end, const unsigned char **s,
                        const unsigned char **e) {
    uint64_t n;
    if (ow_varint(p, end, &p, &n) < 0 || n > (uint64_t)(end - p))
        return -1;
    *s = p;
    *e = p + n;
    return 0;
}

/* -- a span ------------------------------------------------------------------------------------------- */

typedef struct {
    const unsigned char *tid, *sid, *parent;
    Py_ssize_t tid_len, sid_len, parent_len;
    uint64_t kind, start, end, code;
    const unsigned char *val[MAX_GROUPS];
    Py_ssize_t val_len[MAX_GROUPS];
    int rank[MAX_GROUPS];
} SpanFields;

static int parse_status(const unsigned char *p, const unsigned char *end, SpanFields *f) {
    while (p < end) {
        uint32_t field;
        int wt;
        if (ow_tag(p, end, &p, &field, &wt) < 0)
            return -1;
        if (field == 3) {
            if (wt != 0 || ow_varint(p, end, &p, &f->code) < 0 || f->code > 0x7FFFFFFF)
                return -1;
        } else if (ow_skip(p, end, wt, &p) < 0) {
            return -1;
        }
    }
    return 0;
}

static int parse_attribute(Reader *r, const unsigned char *p, const unsigned char *end, SpanFields *f) {
    const unsigned char *ks = NULL, *ke = NULL, *vs = NULL, *ve = NULL;
    while (p < end) {
        uint32_t field;
        int wt;
        if (ow_tag(p, end, &p, &field, &wt) < 0)
            return -1;
        if (field == 1) {
            if (wt != 2 || rd_ld(p, end, &ks, &ke) < 0)
                return -1;
            p = ke;
        } else if (field == 2) {
            if (wt != 2 || rd_ld(p, end, &vs, &ve) < 0)
                return -1;
            p = ve;
        } else {
            return -1; /* KeyValue has no other field */
        }
    }
    Py_ssize_t klen = ks ? ke - ks : 0, i = 0;
    for (; i + 8 <= klen; i += 8) { /* a key Python would validate as UTF-8: eight bytes at a time */
        uint64_t w;
        memcpy(&w, ks + i, 8);
        if (w & 0x8080808080808080u)
            return -1;
    }
    for (; i < klen; i++)
        if (ks[i] & 0x80)
            return -1;
    if (klen == 0 || klen > MAX_KEYLEN)
        return 0;
    for (int j = r->by_len[klen]; j < r->by_len[klen + 1]; j++) {
        Key *k = &r->keys[r->by_len_order[j]];
        if (k->ptr[klen - 1] != (char)ks[klen - 1] || memcmp(k->ptr, ks, (size_t)klen) != 0)
            continue;
        if (k->rank <= f->rank[k->group]) { /* a newer spelling, or the same key again: it wins */
            f->rank[k->group] = k->rank;
            f->val[k->group] = vs ? vs : (const unsigned char *)"";
            f->val_len[k->group] = vs ? ve - vs : 0;
        }
    }
    return 0;
}

static int parse_span(Reader *r, const unsigned char *p, const unsigned char *end, SpanFields *f) {
    memset(f, 0, offsetof(SpanFields, val));
    for (int g = 0; g < r->ngroups; g++) {
        f->val[g] = NULL;
        f->rank[g] = INT32_MAX;
    }
    while (p < end) {
        uint32_t field;
        int wt;
        const unsigned char *s, *e;
        if (ow_tag(p, end, &p, &field, &wt) < 0)
            return -1;
        switch (field) {
        case 1: case 2: case 4: case 9: case 15:
            if (wt != 2 || rd_ld(p, end, &s, &e) < 0)
                return -1;
            p = e;
            if (field == 1) {
                f->tid = s;
                f->tid_len = e - s;
            } else if (field == 2) {
                f->sid = s;
                f->sid_len = e - s;
            } else if (field == 4) {
                f->parent = s;
                f->parent_len = e - s;
            } else if (field == 9) {
                if (parse_attribute(r, s, e, f) < 0)
                    return -1;
            } else if (parse_status(s, e, f) < 0) {
                return -1;
            }
            break;
        case 6:
            if (wt != 0 || ow_varint(p, end, &p, &f->kind) < 0 || f->kind > 0x7FFFFFFF)
                return -1;
            break;
        case 7: case 8:
            if (wt != 1 || end - p < 8)
                return -1;
            {
                uint64_t v;
                memcpy(&v, p, 8); /* little-endian hosts only: see module init */
                if (field == 7)
                    f->start = v;
                else
                    f->end = v;
            }
            p += 8;
            break;
        default:
            if (ow_skip(p, end, wt, &p) < 0)
                return -1;
        }
    }
    return 0;
}

/* The bytes object of an attribute value: the same values recur (models, operations, agents, tools), so
 * one object is reused for equal contents; its hash, once computed, is kept with it, and the dictionaries
 * the connector looks values up in find them by identity. */
static PyObject *value_bytes(Reader *r, const unsigned char *v, Py_ssize_t n) {
    if (n > INTERN_MAX || r->interned == NULL)
        return PyBytes_FromStringAndSize((const char *)v, n);
    uint32_t h = 2166136261u;
    for (Py_ssize_t i = 0; i < n; i++)
        h = (h ^ v[i]) * 16777619u;
    PyObject **slot = &r->interned[h & (INTERN_SLOTS - 1)];
    PyObject *o = *slot;
    if (o != NULL && PyBytes_GET_SIZE(o) == n && memcmp(PyBytes_AS_STRING(o), v, (size_t)n) == 0) {
        Py_INCREF(o);
        return o;
    }
    o = PyBytes_FromStringAndSize((const char *)v, n);
    if (o == NULL)
        return NULL;
    Py_XSETREF(*slot, Py_NewRef(o));
    return o;
}

static PyObject *count_or_bytes(Reader *r, const unsigned char *v, Py_ssize_t n) {
    if (n >= 2 && n <= 10 && v[0] == 0x18) {
        const unsigned char *q;
        uint64_t x;
        if (ow_varint(v + 1, v + n, &q, &x) == 0 && q == v + n && x < ((uint64_t)1 << 63))
            return PyLong_FromUnsignedLongLong(x);
    }
    return value_bytes(r, v, n);
}

static PyObject *bytes_or_empty(const unsigned char *p, Py_ssize_t n) {
    return PyBytes_FromStringAndSize(p ? (const char *)p : "", p ? n : 0);
}

/* Records and ops hold only bytes, ints, None, str and untracked tuples: they can never be part of a
 * reference cycle, so they are taken out of the cyclic GC's care (as the GC itself does with such tuples,
 * but before they are counted into older generations: a batch of thousands of them would otherwise bring
 * full collections of the daemon's whole heap forward). */
static void untrack_if_atomic(PyObject *t) {
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(t); i++) {
        PyObject *o = PyTuple_GET_ITEM(t, i);
        if (PyObject_IS_GC(o) && PyObject_GC_IsTracked(o))
            return;
    }
    PyObject_GC_UnTrack(t);
}

static PyObject *record(Reader *r, PyObject *res, SpanFields *f) {
    PyObject *t = PyTuple_New(8 + r->ngroups);
    if (t == NULL)
        return NULL;
    Py_INCREF(res);
    PyTuple_SET_ITEM(t, 0, res);
    PyObject *items[7] = {
        bytes_or_empty(f->tid, f->tid_len), bytes_or_empty(f->sid, f->sid_len),
        bytes_or_empty(f->parent, f->parent_len), PyLong_FromUnsignedLongLong(f->kind),
        PyLong_FromUnsignedLongLong(f->start), PyLong_FromUnsignedLongLong(f->end),
        PyLong_FromUnsignedLongLong(f->code)};
    for (int i = 0; i < 7; i++) {
        if (items[i] == NULL) {
            for (int j = i + 1; j < 7; j++)
                Py_XDECREF(items[j]);
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, 1 + i, items[i]);
    }
    for (int g = 0; g < r->ngroups; g++) {
        PyObject *v;
        if (f->val[g] == NULL) {
            v = Py_None;
            Py_INCREF(v);
        } else if (r->is_count[g]) {
            v = count_or_bytes(r, f->val[g], f->val_len[g]);
        } else {
            v = value_bytes(r, f->val[g], f->val_len[g]);
        }
        if (v == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, 8 + g, v);
    }
    untrack_if_atomic(t);
    return t;
}

/* Whether [s, e) holds one of the needles. One pass: each needle is the serialized start of a KeyValue
 * (0x0A, the key's length, the key), so only the positions of 0x0A (found with memchr) are compared;
 * needles that do not start with a byte of their own are searched with memmem. */
static int has_needle(Reader *r, const unsigned char *s, const unsigned char *e) {
    if (!r->needles_at_lf) {
        for (int i = 0; i < r->nneedles; i++)
            if (memmem(s, (size_t)(e - s), r->needle[i], (size_t)r->needle_len[i]) != NULL)
                return 1;
        return 0;
    }
    const unsigned char *p = s;
    while (e - p >= 2 && (p = memchr(p, 0x0A, (size_t)(e - p - 1))) != NULL) {
        unsigned char n = p[1];
        for (int i = 0; i < r->nneedles; i++) {
            if ((unsigned char)r->needle[i][1] == n && e - p >= r->needle_len[i]
                && memcmp(p + 2, r->needle[i] + 2, (size_t)(r->needle_len[i] - 2)) == 0)
                return 1;
        }
        p++;
    }
    return 0;
}

/* -- ops: the records connector-ready ---------------------------------------------------------------
 * `Reader.read_ops(raw, classes, resource, other_error, exemplars)` reads like `read` but turns the GenAI
 * spans it can into the connector's ops (spans.Op, the tuple runs.RunAccounting._span makes) itself:
 * spans whose `gen_ai.operation.name` value is a key of `classes` (value -> (class, operation value,
 * generation): INFERENCE 0, TOOL 1, AGENT 2), not of kind SERVER, with no `mcp.method.name` and token
 * counts that are plain ints. Consecutive ops of one trace come as one item (trace id, (ops...), the
 * first op without a parent or None); every other GenAI span comes as its record, in order. `resource(bytes)`
 * gives (resource identity, dimension values) (called once per ResourceSpans); the configuration has no
 * dimensions (the caller's check). Returns (items, roots) or None as `read` does.
 * The group indexes below are those of spans.GROUPS, and the op layout that of spans.Op. */
enum { G_OP, G_PROVIDER, G_REQ, G_RESP, G_TIN, G_TOUT, G_TCR, G_TCW, G_TRS, G_AGENT_NAME, G_AGENT_ID, G_TOOL,
       G_TOOL_TYPE, G_CONV, G_ERR, G_MCP, G_USED };
enum { CLS_INFERENCE = 0, CLS_TOOL = 1, CLS_AGENT = 2 };

typedef struct {
    PyObject *genai, *roots;
    /* read_ops only (classes NULL otherwise) */
    PyObject *classes, *resource_fn, *other_error;
    int exemplars;
    PyObject *ident;                  /* the resource identity of the current ResourceSpans, or NULL */
    PyObject *group_tid, *group_ops, *group_root; /* the current item (NULL: none) */
} Ctx;

static int flush_group(Ctx *c) {
    if (c->group_tid == NULL)
        return 0;
    PyObject *ops = PyList_AsTuple(c->group_ops), *item = NULL;
    if (ops != NULL) {
        untrack_if_atomic(ops);
        item = PyTuple_Pack(3, c->group_tid, ops, c->group_root ? c->group_root : Py_None);
        Py_DECREF(ops);
    }
    Py_CLEAR(c->group_tid);
    Py_CLEAR(c->group_ops);
    Py_CLEAR(c->group_root);
    if (item == NULL)
        return -2;
    untrack_if_atomic(item);
    int rc = PyList_Append(c->genai, item);
    Py_DECREF(item);
    return rc < 0 ? -2 : 0;
}

static inline PyObject *val_or_none(Reader *r, SpanFields *f, int g) {
    if (f->val[g] == NULL)
        return Py_NewRef(Py_None);
    return value_bytes(r, f->val[g], f->val_len[g]);
}

static inline int is_empty_string(SpanFields *f, int g) { /* the serialized AnyValue of "" */
    return f->val_len[g] == 2 && f->val[g][0] == 0x0A && f->val[g][1] == 0x00;
}

/* 1: made an op (stolen into the current item); 0: not one for here (the caller emits the record); -2. */
static int try_op(Reader *r, Ctx *c, PyObject *res, SpanFields *f) {
    if (f->kind == 2 || f->val[G_MCP] != NULL || f->val[G_OP] == NULL)
        return 0;
    for (int g = G_TIN; g <= G_TRS; g++) { /* counts must be plain non-negative varints */
        if (f->val[g] == NULL)
            continue;
        const unsigned char *v = f->val[g], *q;
        Py_ssize_t n = f->val_len[g];
        uint64_t x;
        if (n < 2 || n > 10 || v[0] != 0x18 || ow_varint(v + 1, v + n, &q, &x) < 0 || q != v + n
            || x >= ((uint64_t)1 << 63))
            return 0;
    }
    PyObject *opv = value_bytes(r, f->val[G_OP], f->val_len[G_OP]);
    if (opv == NULL)
        return -2;
    PyObject *cl = PyDict_GetItemWithError(c->classes, opv); /* borrowed */
    Py_DECREF(opv);
    if (cl == NULL)
        return PyErr_Occurred() ? -2 : 0;
    if (!PyTuple_Check(cl) || PyTuple_GET_SIZE(cl) != 3) {
        PyErr_SetString(PyExc_TypeError, "classes: value -> (class, operation value, generation)");
        return -2;
    }
    long cls = PyLong_AsLong(PyTuple_GET_ITEM(cl, 0));
    if (cls == -1 && PyErr_Occurred())
        return -2;
    if (cls != CLS_INFERENCE && cls != CLS_TOOL && cls != CLS_AGENT)
        return 0;
    if (c->ident == NULL) {
        PyObject *found = PyObject_CallOneArg(c->resource_fn, res);
        if (found == NULL)
            return -2;
        if (!PyTuple_Check(found) || PyTuple_GET_SIZE(found) != 2) {
            Py_DECREF(found);
            PyErr_SetString(PyExc_TypeError, "resource() returns (identity, dimension values)");
            return -2;
        }
        c->ident = Py_NewRef(PyTuple_GET_ITEM(found, 0));
        Py_DECREF(found);
    }
    Py_ssize_t size = cls == CLS_INFERENCE ? 20 : cls == CLS_TOOL ? 14 : 11;
    PyObject *op = PyTuple_New(size);
    if (op == NULL)
        return -2;
    PyObject *own;
    if (f->val[G_AGENT_NAME] != NULL && !is_empty_string(f, G_AGENT_NAME))
        own = value_bytes(r, f->val[G_AGENT_NAME], f->val_len[G_AGENT_NAME]);
    else if (f->val[G_AGENT_ID] != NULL && !is_empty_string(f, G_AGENT_ID))
        own = value_bytes(r, f->val[G_AGENT_ID], f->val_len[G_AGENT_ID]);
    else
        own = Py_NewRef(Py_None);
    PyObject *err;
    if (f->val[G_ERR] != NULL)
        err = value_bytes(r, f->val[G_ERR], f->val_len[G_ERR]);
    else
        err = Py_NewRef(f->code == 2 ? c->other_error : Py_None);
    PyObject *items[20] = {
        Py_NewRef(PyTuple_GET_ITEM(cl, 0)), bytes_or_empty(f->sid, f->sid_len), bytes_or_empty(f->parent, f->parent_len),
        PyLong_FromUnsignedLongLong(f->start), PyLong_FromUnsignedLongLong(f->end), err, own, Py_NewRef(c->ident),
        PyTuple_New(0), c->exemplars ? val_or_none(r, f, G_CONV) : Py_NewRef(Py_None),
        Py_NewRef(PyTuple_GET_ITEM(cl, 1))};
    if (cls == CLS_INFERENCE) {
        items[11] = val_or_none(r, f, G_PROVIDER);
        items[12] = val_or_none(r, f, G_REQ);
        items[13] = val_or_none(r, f, G_RESP);
        items[14] = Py_NewRef(PyTuple_GET_ITEM(cl, 2));
        for (int g = G_TIN; g <= G_TRS; g++)
            items[15 + g - G_TIN] = f->val[g] == NULL ? Py_NewRef(Py_None) : count_or_bytes(r, f->val[g], f->val_len[g]);
    } else if (cls == CLS_TOOL) {
        items[11] = val_or_none(r, f, G_TOOL);
        items[12] = val_or_none(r, f, G_TOOL_TYPE);
        items[13] = Py_NewRef(Py_None);
    }
    int bad = 0;
    for (Py_ssize_t i = 0; i < size; i++) {
        if (items[i] == NULL)
            bad = 1;
        PyTuple_SET_ITEM(op, i, items[i]); /* NULL items: the tuple is dropped below */
    }
    if (bad) {
        Py_DECREF(op);
        return -2;
    }
    untrack_if_atomic(op);
    /* into the current item, or a new one */
    if (c->group_tid != NULL && (PyBytes_GET_SIZE(c->group_tid) != f->tid_len
                                 || (f->tid_len != 0
                                     && memcmp(PyBytes_AS_STRING(c->group_tid), f->tid, (size_t)f->tid_len) != 0))) {
        if (flush_group(c) < 0) {
            Py_DECREF(op);
            return -2;
        }
    }
    if (c->group_tid == NULL) {
        c->group_tid = bytes_or_empty(f->tid, f->tid_len);
        c->group_ops = PyList_New(0);
        if (c->group_tid == NULL || c->group_ops == NULL) {
            Py_DECREF(op);
            return -2;
        }
    }
    if (f->parent_len == 0 && c->group_root == NULL)
        c->group_root = Py_NewRef(op);
    int rc = PyList_Append(c->group_ops, op);
    Py_DECREF(op);
    return rc < 0 ? -2 : 1;
}

/* -1: fall back; -2: a Python error is set. */
static int read_scope(Reader *r, const unsigned char *p, const unsigned char *end, PyObject *res, Ctx *c,
                      SpanFields *f) {
    while (p < end) {
        uint32_t field;
        int wt;
        const unsigned char *s, *e;
        if (ow_tag(p, end, &p, &field, &wt) < 0)
            return -1;
        if (field != 2) {
            if (ow_skip(p, end, wt, &p) < 0)
                return -1;
            continue;
        }
        if (wt != 2 || rd_ld(p, end, &s, &e) < 0)
            return -1;
        p = e;
        PyObject *list;
        if (has_needle(r, s, e)) {
            list = c->genai;
        } else {
            if (e - s >= 30 && s[28] == 0x22 && s[29] == 0x08)
                continue; /* visibly a child: never a root */
            list = c->roots;
        }
        if (parse_span(r, s, e, f) < 0)
            return -1;
        if (list == c->genai) {
            r->parsed++;
            if (c->classes != NULL) {
                int made = try_op(r, c, res, f);
                if (made != 0) {
                    if (made < 0)
                        return -2;
                    continue;
                }
                if (flush_group(c) < 0)
                    return -2;
            }
        } else if (f->parent_len != 0) {
            continue;
        }
        PyObject *rec = record(r, res, f);
        if (rec == NULL)
            return -2;
        int rc = PyList_Append(list, rec);
        Py_DECREF(rec);
        if (rc < 0)
            return -2;
    }
    return 0;
}

static int read_resource_spans(Reader *r, const unsigned char *p, const unsigned char *end, Ctx *c,
                               SpanFields *f, PyObject *empty) {
    const unsigned char *rs = NULL, *re = NULL, *q = p;
    while (q < end) { /* the resource first: it may come after its spans */
        uint32_t field;
        int wt;
        if (ow_tag(q, end, &q, &field, &wt) < 0)
            return -1;
        if (field == 1) {
            if (wt != 2 || rd_ld(q, end, &rs, &re) < 0)
                return -1;
            q = re;
        } else if (field == 2) {
            if (wt != 2 || ow_skip(q, end, wt, &q) < 0)
                return -1;
        } else if (ow_skip(q, end, wt, &q) < 0) {
            return -1;
        }
    }
    PyObject *res = rs ? PyBytes_FromStringAndSize((const char *)rs, re - rs) : Py_NewRef(empty);
    if (res == NULL)
        return -2;
    Py_CLEAR(c->ident);
    int rc = 0;
    while (p < end && rc == 0) {
        uint32_t field;
        int wt;
        const unsigned char *s, *e;
        if (ow_tag(p, end, &p, &field, &wt) < 0) {
            rc = -1;
            break;
        }
        if (field != 2) {
            if (ow_skip(p, end, wt, &p) < 0)
                rc = -1;
            continue;
        }
        if (rd_ld(p, end, &s, &e) < 0) {
            rc = -1;
            break;
        }
        p = e;
        rc = read_scope(r, s, e, res, c, f);
    }
    Py_CLEAR(c->ident);
    Py_DECREF(res);
    return rc;
}

static PyObject *read_with(Reader *r, PyObject *arg, Ctx *c) {
    Py_buffer buf;
    if (PyObject_GetBuffer(arg, &buf, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *p = buf.buf, *end = p + buf.len;
    c->genai = PyList_New(0);
    c->roots = PyList_New(0);
    PyObject *empty = PyBytes_FromStringAndSize("", 0);
    SpanFields *f = PyMem_Malloc(sizeof(SpanFields));
    int rc = (c->genai && c->roots && empty && f) ? 0 : -2;
    if (rc == -2 && f == NULL && !PyErr_Occurred())
        PyErr_NoMemory();
    while (rc == 0 && p < end) {
        uint32_t field;
        int wt;
        const unsigned char *s, *e;
        if (ow_tag(p, end, &p, &field, &wt) < 0) {
            rc = -1;
            break;
        }
        if (field != 1) {
            if (ow_skip(p, end, wt, &p) < 0)
                rc = -1;
            continue;
        }
        if (wt != 2 || rd_ld(p, end, &s, &e) < 0) {
            rc = -1;
            break;
        }
        p = e;
        rc = read_resource_spans(r, s, e, c, f, empty);
    }
    if (rc == 0)
        rc = flush_group(c);
    Py_CLEAR(c->group_tid);
    Py_CLEAR(c->group_ops);
    Py_CLEAR(c->group_root);
    Py_CLEAR(c->ident);
    PyBuffer_Release(&buf);
    PyMem_Free(f);
    Py_XDECREF(empty);
    PyObject *out = NULL;
    if (rc == 0)
        out = PyTuple_Pack(2, c->genai, c->roots);
    else if (rc == -1)
        out = Py_NewRef(Py_None);
    Py_XDECREF(c->genai);
    Py_XDECREF(c->roots);
    return out;
}

static PyObject *reader_read(Reader *r, PyObject *arg) {
    Ctx c = {0};
    return read_with(r, arg, &c);
}

static PyObject *reader_read_ops(Reader *r, PyObject *args) {
    Ctx c = {0};
    PyObject *raw;
    if (!PyArg_ParseTuple(args, "OO!OOp", &raw, &PyDict_Type, &c.classes, &c.resource_fn, &c.other_error,
                          &c.exemplars))
        return NULL;
    if (r->ngroups < G_USED) {
        PyErr_SetString(PyExc_ValueError, "read_ops needs the groups of spans.GROUPS");
        return NULL;
    }
    return read_with(r, raw, &c);
}

/* -- the type ---------------------------------------------------------------------------------------- */

static int reader_init(Reader *r, PyObject *args, PyObject *kwds) {
    PyObject *groups, *counts, *needles;
    static char *kwlist[] = {"groups", "counts", "needles", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!O!", kwlist, &PyTuple_Type, &groups, &PyTuple_Type, &counts,
                                     &PyTuple_Type, &needles))
        return -1;
    Py_ssize_t ng = PyTuple_GET_SIZE(groups), nn = PyTuple_GET_SIZE(needles);
    if (ng > MAX_GROUPS || nn > MAX_NEEDLES) {
        PyErr_SetString(PyExc_ValueError, "too many groups or needles");
        return -1;
    }
    Py_XSETREF(r->groups, Py_NewRef(groups));
    Py_XSETREF(r->needles, Py_NewRef(needles));
    r->ngroups = (int)ng;
    r->nkeys = 0;
    memset(r->by_len, 0, sizeof(r->by_len)); /* no key looked up until the sort below */
    memset(r->is_count, 0, sizeof(r->is_count));
    for (Py_ssize_t g = 0; g < ng; g++) {
        PyObject *names = PyTuple_GET_ITEM(groups, g);
        if (!PyTuple_Check(names)) {
            PyErr_SetString(PyExc_TypeError, "a group is a tuple of bytes");
            return -1;
        }
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(names); k++) {
            PyObject *name = PyTuple_GET_ITEM(names, k);
            if (!PyBytes_Check(name) || r->nkeys >= MAX_KEYS) {
                PyErr_SetString(PyExc_TypeError, "a key is bytes (at most 256 keys)");
                return -1;
            }
            Key *key = &r->keys[r->nkeys++];
            key->ptr = PyBytes_AS_STRING(name);
            key->len = PyBytes_GET_SIZE(name);
            key->group = (int)g;
            key->rank = (int)k;
        }
    }
    /* counting sort of the keys by length (keys longer than MAX_KEYLEN are never looked up) */
    unsigned short n_len[MAX_KEYLEN + 2] = {0};
    for (int i = 0; i < r->nkeys; i++)
        if (r->keys[i].len > 0 && r->keys[i].len <= MAX_KEYLEN)
            n_len[r->keys[i].len]++;
    unsigned short at = 0;
    for (int n = 0; n <= MAX_KEYLEN + 1; n++) {
        r->by_len[n] = at;
        at = (unsigned short)(at + n_len[n]);
    }
    unsigned short fill[MAX_KEYLEN + 2];
    memcpy(fill, r->by_len, sizeof(fill));
    for (int i = 0; i < r->nkeys; i++)
        if (r->keys[i].len > 0 && r->keys[i].len <= MAX_KEYLEN)
            r->by_len_order[fill[r->keys[i].len]++] = (unsigned char)i;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(counts); i++) {
        long g = PyLong_AsLong(PyTuple_GET_ITEM(counts, i));
        if (g < 0 || g >= ng) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "a count group out of range");
            return -1;
        }
        r->is_count[g] = 1;
    }
    if (r->interned == NULL) {
        r->interned = PyMem_Calloc(INTERN_SLOTS, sizeof(PyObject *));
        if (r->interned == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    r->nneedles = (int)nn;
    for (Py_ssize_t i = 0; i < nn; i++) {
        PyObject *n = PyTuple_GET_ITEM(needles, i);
        if (!PyBytes_Check(n) || PyBytes_GET_SIZE(n) == 0) {
            PyErr_SetString(PyExc_TypeError, "a needle is non-empty bytes");
            return -1;
        }
        r->needle[i] = PyBytes_AS_STRING(n);
        r->needle_len[i] = PyBytes_GET_SIZE(n);
    }
    r->needles_at_lf = 1;
    for (int i = 0; i < r->nneedles; i++)
        if (r->needle_len[i] < 2 || r->needle[i][0] != 0x0A || (unsigned char)r->needle[i][1] != r->needle_len[i] - 2)
            r->needles_at_lf = 0;
    return 0;
}

static void reader_dealloc(Reader *r) {
    if (r->interned != NULL) {
        for (int i = 0; i < INTERN_SLOTS; i++)
            Py_XDECREF(r->interned[i]);
        PyMem_Free(r->interned);
    }
    Py_XDECREF(r->groups);
    Py_XDECREF(r->needles);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static PyObject *reader_get_parsed(Reader *r, void *closure) {
    return PyLong_FromSsize_t(r->parsed);
}

static PyMethodDef reader_methods[] = {
    {"read", (PyCFunction)reader_read, METH_O,
     "read(raw) -> (genai records, root records), or None: read it with the Python reader"},
    {"read_ops", (PyCFunction)reader_read_ops, METH_VARARGS,
     "read_ops(raw, classes, resource, other_error, exemplars) -> (items, root records), or None"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef reader_getset[] = {
    {"parsed", (getter)reader_get_parsed, NULL, "GenAI spans parsed so far", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "connectors.genai_metrics._genaiwire.Reader",
    .tp_basicsize = sizeof(Reader),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "genai_metrics' span reader (see the comment at the top of _genaiwire.c).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)reader_init,
    .tp_dealloc = (destructor)reader_dealloc,
    .tp_methods = reader_methods,
    .tp_getset = reader_getset,
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "connectors.genai_metrics._genaiwire", "genai_metrics' span reader in C.", -1, NULL,
};

PyMODINIT_FUNC PyInit__genaiwire(void) {
    const uint16_t one = 1;
    if (*(const unsigned char *)&one != 1) {
        PyErr_SetString(PyExc_ImportError, "_genaiwire reads fixed64 fields as little-endian");
        return NULL;
    }
    if (PyType_Ready(&ReaderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Reader", (PyObject *)&ReaderType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

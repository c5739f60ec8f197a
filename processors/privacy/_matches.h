/*
 * Anchor-match bookkeeping shared by the two C extensions that find anchors for AnchorScanner
 * (processors/privacy/scanner.py): processors/privacy/_hsscan.c (`Scanner`, which calls libhyperscan
 * itself) and processors/privacy/_wirewalk.c (`Collector`, the callback handed to hyperscan's Python
 * binding).
 *
 * Expressions have ids 0..n-1. A hyperscan match (expression id, end offset `to`) is recorded as the
 * offset `to - adj[id]` (the first byte of a fixed-length expression's match, the last byte of a
 * variable-length one's) with the expression's anchor `anchor_of[id]`. Expressions with ids >=
 * gate_from are gates: which of them matched is kept apart.
 *
 * Shapes are expressions made of byte classes only (`[0-9]{13}`, `[0-9]{4}[ -][0-9]{6}[ -][0-9]{4}`):
 * hyperscan has no literal to skip to in them and spends more on them than on every other anchor
 * together, so they are found here instead, by sampling. A shape of length L occurs only where some
 * multiple of L lies inside the occurrence (any L consecutive offsets hold exactly one multiple of L),
 * so only the bytes at multiples of L (of the shortest shape's length, for all of them) are looked
 * at: where one belongs to the shape, the possible
 * starts around it are checked, and the multiple itself is recorded (it lies inside every occurrence
 * found there). Every occurrence gets an offset inside it, which is all AnchorScanner promises.
 *
 * `matches_take` returns (offsets, anchor indexes, gate expression ids) sorted by offset, then
 * expression id, and resets.
 */
#ifndef OTELPIPE_MATCHES_H
#define OTELPIPE_MATCHES_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_EXPRESSIONS 256
#define MAX_SHAPE_LEN 64

typedef struct {
    unsigned int id;             /* expression id */
    Py_ssize_t len;              /* L */
    int run;                     /* one class at every position */
    uint8_t any[256];            /* bytes found at some position */
    uint8_t at[MAX_SHAPE_LEN][256]; /* bytes allowed at each position */
} Shape;

typedef struct {
    Py_ssize_t n_ids;
    Py_ssize_t *adj;
    Py_ssize_t *anchor_of;
    Py_ssize_t gate_from;
    Shape *shapes;
    Py_ssize_t n_shapes;
    uint64_t *found; /* offset << 8 | expression id */
    Py_ssize_t n, cap;
    unsigned char gates[MAX_EXPRESSIONS];
    int any_gate;
} Matches;

static void matches_reset(Matches *m) {
    m->n = 0;
    memset(m->gates, 0, sizeof m->gates);
    m->any_gate = 0;
}

static void matches_free(Matches *m) {
    PyMem_Free(m->adj);
    PyMem_Free(m->anchor_of);
    PyMem_Free(m->shapes);
    PyMem_Free(m->found);
    m->adj = m->anchor_of = NULL;
    m->shapes = NULL;
    m->n_shapes = 0;
    m->found = NULL;
    m->cap = 0;
    matches_reset(m);
}

/* One shape from (expression id, ((class bytes, count), ...)). */
static int shape_init(Shape *s, PyObject *spec, Py_ssize_t n_ids) {
    unsigned int id;
    PyObject *parts;
    if (!PyArg_ParseTuple(spec, "IO!;a shape is (expression id, ((class bytes, count), ...))", &id, &PyTuple_Type,
                          &parts))
        return -1;
    if ((Py_ssize_t)id >= n_ids) {
        PyErr_SetString(PyExc_ValueError, "a shape's expression id is out of range");
        return -1;
    }
    memset(s, 0, sizeof *s);
    s->id = id;
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(parts); k++) {
        const char *chars;
        Py_ssize_t nchars, count;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(parts, k), "y#n;a shape part is (class bytes, count)", &chars,
                              &nchars, &count))
            return -1;
        if (count < 1 || s->len + count > MAX_SHAPE_LEN) {
            PyErr_SetString(PyExc_ValueError, "a shape is 1 to 64 bytes long");
            return -1;
        }
        for (Py_ssize_t j = 0; j < count; j++, s->len++)
            for (Py_ssize_t c = 0; c < nchars; c++) {
                s->at[s->len][(uint8_t)chars[c]] = 1;
                s->any[(uint8_t)chars[c]] = 1;
            }
    }
    if (s->len == 0) {
        PyErr_SetString(PyExc_ValueError, "a shape is 1 to 64 bytes long");
        return -1;
    }
    s->run = 1;
    for (Py_ssize_t j = 1; j < s->len; j++)
        if (memcmp(s->at[j], s->at[0], 256) != 0)
            s->run = 0;
    return 0;
}

/* `adj` and `anchor_of`: tuples of ints, one per expression (at most 256); `shapes`: a tuple of shape
 * specs (see shape_init) whose expressions are left to the sampler. */
static int matches_init(Matches *m, PyObject *adj, PyObject *anchor_of, Py_ssize_t gate_from, PyObject *shapes) {
    Py_ssize_t n = PyTuple_GET_SIZE(adj);
    if (n > MAX_EXPRESSIONS || PyTuple_GET_SIZE(anchor_of) != n) {
        PyErr_SetString(PyExc_ValueError, "at most 256 expressions, one anchor each");
        return -1;
    }
    matches_free(m);
    Py_ssize_t ns = PyTuple_GET_SIZE(shapes);
    m->adj = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Py_ssize_t));
    m->anchor_of = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Py_ssize_t));
    m->shapes = PyMem_Calloc((size_t)(ns ? ns : 1), sizeof(Shape));
    if (m->adj == NULL || m->anchor_of == NULL || m->shapes == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        m->adj[k] = PyLong_AsSsize_t(PyTuple_GET_ITEM(adj, k));
        m->anchor_of[k] = PyLong_AsSsize_t(PyTuple_GET_ITEM(anchor_of, k));
        if (PyErr_Occurred())
            return -1;
    }
    m->n_ids = n;
    m->gate_from = gate_from;
    for (Py_ssize_t k = 0; k < ns; k++)
        if (shape_init(&m->shapes[k], PyTuple_GET_ITEM(shapes, k), n) < 0)
            return -1;
    m->n_shapes = ns;
    return 0;
}

/* Record one occurrence of expression `id` at `offset`; -1 (MemoryError set) when out of memory. */
static int matches_put(Matches *m, unsigned int id, Py_ssize_t offset) {
    if (m->n == m->cap) {
        Py_ssize_t cap = m->cap ? m->cap * 2 : 256;
        uint64_t *p = PyMem_Realloc(m->found, sizeof(uint64_t) * (size_t)cap);
        if (p == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        m->found = p;
        m->cap = cap;
    }
    m->found[m->n++] = (uint64_t)offset << 8 | (uint64_t)id;
    if ((Py_ssize_t)id >= m->gate_from) {
        m->gates[id] = 1;
        m->any_gate = 1;
    }
    return 0;
}

/* Record a hyperscan match of expression `id` ending at `to`. `id` must be < n_ids. */
static int matches_add(Matches *m, unsigned int id, unsigned long long to) {
    return matches_put(m, id, (Py_ssize_t)to - m->adj[id]);
}

static int shape_at(const Shape *s, const uint8_t *b, Py_ssize_t start) {
    for (Py_ssize_t j = 0; j < s->len; j++)
        if (!s->at[j][b[start + j]])
            return 0;
    return 1;
}

/* Sample `b` for every shape (see the comment at the top), all shapes in one pass whose step is the
 * shortest shape's length (a longer occurrence holds a multiple of it too). Every byte of an
 * occurrence belongs to the shape, so the run of such bytes around a sampled byte is measured first
 * (once per run): only in a run at least L long can an occurrence lie, which in text is rare (a space
 * or a number alone is a short run), and only there are the possible starts checked. An occurrence
 * [s, s + L) holding x also holds x - L/2 or x + L/2, which rules most sampled bytes out before any
 * measuring. */
static int matches_add_shapes(Matches *m, const uint8_t *b, Py_ssize_t len) {
    if (m->n_shapes == 0)
        return 0;
    Py_ssize_t step = MAX_SHAPE_LEN, run_start[8], run_end[8];
    uint8_t any[256] = {0};
    for (Py_ssize_t k = 0; k < m->n_shapes; k++) {
        step = m->shapes[k].len < step ? m->shapes[k].len : step;
        for (int c = 0; c < 256; c++)
            any[c] |= m->shapes[k].any[c];
        if (k < 8)
            run_end[k] = -1;
    }
    for (Py_ssize_t x = 0; x < len; x += step) {
        if (!any[b[x]])
            continue;
        for (Py_ssize_t k = 0; k < m->n_shapes; k++) {
            const Shape *s = &m->shapes[k];
            Py_ssize_t L = s->len, h = L / 2, rs, re;
            if (!s->any[b[x]])
                continue;
            if (k < 8 && x < run_end[k]) {
                rs = run_start[k];
                re = run_end[k];
            } else {
                if (!(x >= h && s->any[b[x - h]]) && !(x + h < len && s->any[b[x + h]]))
                    continue;
                rs = x;
                re = x + 1;
                while (rs > 0 && s->any[b[rs - 1]])
                    rs--;
                while (re < len && s->any[b[re]])
                    re++;
                if (k < 8) {
                    run_start[k] = rs;
                    run_end[k] = re;
                }
            }
            if (re - rs < L)
                continue;
            int found = s->run; /* in a run of one class, every window is an occurrence */
            Py_ssize_t lo = x - L + 1 < rs ? rs : x - L + 1, hi = re - L < x ? re - L : x;
            for (Py_ssize_t start = lo; !found && start <= hi; start++)
                found = shape_at(s, b, start);
            if (found && matches_put(m, s->id, x) < 0)
                return -1;
        }
    }
    return 0;
}

static int matches_cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static PyObject *matches_take(Matches *m) {
    Py_ssize_t n = m->n;
    if (n > 1)
        qsort(m->found, (size_t)n, sizeof(uint64_t), matches_cmp);
    PyObject *offs = PyList_New(n), *ids = PyList_New(n), *gates = PyList_New(0), *res = NULL;
    if (offs == NULL || ids == NULL || gates == NULL)
        goto done;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *o = PyLong_FromUnsignedLongLong(m->found[k] >> 8);
        PyObject *i = PyLong_FromSsize_t(m->anchor_of[m->found[k] & 0xFF]);
        if (o == NULL || i == NULL) {
            Py_XDECREF(o);
            Py_XDECREF(i);
            goto done;
        }
        PyList_SET_ITEM(offs, k, o);
        PyList_SET_ITEM(ids, k, i);
    }
    if (m->any_gate)
        for (Py_ssize_t k = 0; k < m->n_ids; k++)
            if (m->gates[k]) {
                PyObject *g = PyLong_FromSsize_t(k);
                if (g == NULL || PyList_Append(gates, g) < 0) {
                    Py_XDECREF(g);
                    goto done;
                }
                Py_DECREF(g);
            }
    res = PyTuple_Pack(3, offs, ids, gates);
done:
    Py_XDECREF(offs);
    Py_XDECREF(ids);
    Py_XDECREF(gates);
    matches_reset(m);
    return res;
}

#endif

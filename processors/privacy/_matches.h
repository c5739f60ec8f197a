/*
 * Anchor-match bookkeeping shared by the two C extensions that collect hyperscan matches:
 * processors/privacy/_wirewalk.c (`Collector`, the callback handed to hyperscan's Python binding) and
 * processors/privacy/_hsscan.c (`Scanner`, which calls libhyperscan itself). See AnchorScanner in
 * processors/privacy/anchorscan.py for what the numbers mean.
 *
 * A match (expression id, end offset `to`) is recorded as the offset `to - adj[id]` (the first
 * byte of a fixed-length expression's match, the last byte of a variable-length one's) with the
 * expression's anchor `anchor_of[id]`; expressions with ids >= gate_from are gates, and which of
 * them matched is kept apart. `matches_take` returns (offsets, anchor indexes, gate expression ids)
 * sorted by offset, then expression id, and resets.
 */
#ifndef OTELPIPE_MATCHES_H
#define OTELPIPE_MATCHES_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    Py_ssize_t n_ids;
    Py_ssize_t *adj;
    Py_ssize_t *anchor_of;
    Py_ssize_t gate_from;
    uint64_t *found; /* offset << 8 | expression id */
    Py_ssize_t n, cap;
    unsigned char gates[256];
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
    PyMem_Free(m->found);
    m->adj = m->anchor_of = NULL;
    m->found = NULL;
    m->cap = 0;
    matches_reset(m);
}

/* `adj` and `anchor_of`: tuples of ints, one per expression (at most 256). */
static int matches_init(Matches *m, PyObject *adj, PyObject *anchor_of, Py_ssize_t gate_from) {
    Py_ssize_t n = PyTuple_GET_SIZE(adj);
    if (n > 256 || PyTuple_GET_SIZE(anchor_of) != n) {
        PyErr_SetString(PyExc_ValueError, "at most 256 expressions, one anchor each");
        return -1;
    }
    matches_free(m);
    m->adj = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Py_ssize_t));
    m->anchor_of = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Py_ssize_t));
    if (m->adj == NULL || m->anchor_of == NULL) {
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
    return 0;
}

/* Record one match; -1 (MemoryError set) when out of memory. `id` must be < n_ids. */
static int matches_add(Matches *m, unsigned int id, unsigned long long to) {
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
    m->found[m->n++] = (uint64_t)((Py_ssize_t)to - m->adj[id]) << 8 | (uint64_t)id;
    if ((Py_ssize_t)id >= m->gate_from) {
        m->gates[id] = 1;
        m->any_gate = 1;
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

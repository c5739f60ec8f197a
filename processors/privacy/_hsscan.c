/*
 * processors.privacy._hsscan: secret_mask's anchor scan, calling libhyperscan directly.
 *
 * Why this exists: hyperscan's Python binding releases the GIL around a scan and takes it back
 * for every match to call a Python callback; on agent telemetry (a hundred and more anchor
 * matches per request) those hand-offs were ~14 % of the privacy pipeline's CPU. This module
 * compiles the same expressions with the same flags, scans holding the GIL (a scan of a 67 KB
 * request takes ~20 us; releasing the GIL for it would only invite the hand-offs back) and
 * records matches in C (processors/privacy/_matches.h), so a scan makes no Python call at all.
 *
 * Shapes (byte-class anchors such as the card digits) are not compiled: _matches.h samples for them
 * after the hyperscan pass, in the same call.
 *
 * It links the system libhyperscan (Debian: libhyperscan-dev to build, libhyperscan5 to run), so
 * it is optional twice over: setup.py skips it where the library is not installed, and
 * processors/privacy/scanner.py falls back to the Python binding (with _wirewalk's Collector) where it
 * does not import. Both give the same offsets (tests/unit/processors/privacy/test_scanner.py).
 *
 *   Scanner(expressions: list[bytes], ids: list[int], flags: list[int], adj: tuple[int],
 *           anchor_of: tuple[int], gate_from: int, shapes: tuple)
 *   Scanner.scan(data) -> (offsets, anchor indexes, gate expression ids), as _matches.h says.
 *   One scan at a time per Scanner (its scratch space), as for AnchorScanner.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <hs/hs.h>

#include "_matches.h"

typedef struct {
    PyObject_HEAD
    hs_database_t *db;
    hs_scratch_t *scratch;
    Matches m;
    int failed; /* out of memory inside a scan */
} Scanner;

static void scanner_release(Scanner *self) {
    if (self->scratch != NULL)
        hs_free_scratch(self->scratch);
    if (self->db != NULL)
        hs_free_database(self->db);
    self->scratch = NULL;
    self->db = NULL;
    matches_free(&self->m);
}

static int scanner_init(Scanner *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"expressions", "ids", "flags", "adj", "anchor_of", "gate_from", "shapes", NULL};
    PyObject *exprs, *idlist, *flags, *adj, *anchor_of, *shapes;
    Py_ssize_t gate_from;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!O!O!O!nO!", kwlist, &PyList_Type, &exprs, &PyList_Type, &idlist,
                                     &PyList_Type, &flags, &PyTuple_Type, &adj, &PyTuple_Type, &anchor_of, &gate_from,
                                     &PyTuple_Type, &shapes))
        return -1;
    Py_ssize_t n = PyList_GET_SIZE(exprs);
    if (PyList_GET_SIZE(flags) != n || PyList_GET_SIZE(idlist) != n) {
        PyErr_SetString(PyExc_ValueError, "one id and one flag per expression");
        return -1;
    }
    scanner_release(self);
    if (matches_init(&self->m, adj, anchor_of, gate_from, shapes) < 0)
        return -1;
    if (n == 0)
        return 0; /* shapes only */
    const char **ex = PyMem_Calloc((size_t)n, sizeof(char *));
    unsigned int *fl = PyMem_Calloc((size_t)n, sizeof(unsigned int));
    unsigned int *ids = PyMem_Calloc((size_t)n, sizeof(unsigned int));
    int rc = -1;
    if (ex == NULL || fl == NULL || ids == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *e = PyList_GET_ITEM(exprs, k);
        if (!PyBytes_Check(e)) {
            PyErr_SetString(PyExc_TypeError, "expressions are bytes");
            goto done;
        }
        ex[k] = PyBytes_AS_STRING(e);
        fl[k] = (unsigned int)PyLong_AsUnsignedLong(PyList_GET_ITEM(flags, k));
        ids[k] = (unsigned int)PyLong_AsUnsignedLong(PyList_GET_ITEM(idlist, k));
        if (PyErr_Occurred())
            goto done;
        if ((Py_ssize_t)ids[k] >= self->m.n_ids) {
            PyErr_SetString(PyExc_ValueError, "an expression id is out of range");
            goto done;
        }
    }
    hs_compile_error_t *err = NULL;
    if (hs_compile_multi(ex, fl, ids, (unsigned int)n, HS_MODE_BLOCK, NULL, &self->db, &err) != HS_SUCCESS) {
        PyErr_Format(PyExc_ValueError, "hyperscan cannot compile expression %d: %s", err ? err->expression : -1,
                     err ? err->message : "unknown error");
        hs_free_compile_error(err);
        self->db = NULL;
        goto done;
    }
    if (hs_alloc_scratch(self->db, &self->scratch) != HS_SUCCESS) {
        self->scratch = NULL;
        PyErr_SetString(PyExc_RuntimeError, "hyperscan cannot allocate scratch space");
        goto done;
    }
    rc = 0;
done:
    PyMem_Free(ex);
    PyMem_Free(fl);
    PyMem_Free(ids);
    return rc;
}

static void scanner_dealloc(Scanner *self) {
    scanner_release(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int on_match(unsigned int id, unsigned long long from, unsigned long long to, unsigned int flags, void *ctx) {
    Scanner *self = ctx;
    if (matches_add(&self->m, id, to) < 0) {
        self->failed = 1;
        return 1; /* stop the scan */
    }
    return 0;
}

static PyObject *scanner_scan(Scanner *self, PyObject *arg) {
    if (self->m.adj == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Scanner not initialised");
        return NULL;
    }
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    if (b.len > UINT_MAX) {
        PyBuffer_Release(&b);
        PyErr_SetString(PyExc_ValueError, "more than 4 GiB to scan");
        return NULL;
    }
    matches_reset(&self->m);
    self->failed = 0;
    hs_error_t rc = HS_SUCCESS;
    if (self->db != NULL)
        rc = hs_scan(self->db, b.buf, (unsigned int)b.len, 0, self->scratch, on_match, self);
    if (!self->failed && rc == HS_SUCCESS && matches_add_shapes(&self->m, b.buf, b.len) < 0)
        self->failed = 1;
    PyBuffer_Release(&b);
    if (self->failed) {
        matches_reset(&self->m);
        return NULL; /* MemoryError is set */
    }
    if (rc != HS_SUCCESS) {
        matches_reset(&self->m);
        PyErr_Format(PyExc_RuntimeError, "hyperscan scan failed (error %d)", (int)rc);
        return NULL;
    }
    return matches_take(&self->m);
}

static PyMethodDef scanner_methods[] = {
    {"scan", (PyCFunction)scanner_scan, METH_O,
     "scan(data) -> (offsets, anchor indexes, gate expression ids), sorted by offset"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ScannerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "processors.privacy._hsscan.Scanner",
    .tp_basicsize = sizeof(Scanner),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A compiled hyperscan database of anchor expressions (see AnchorScanner).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)scanner_init,
    .tp_dealloc = (destructor)scanner_dealloc,
    .tp_methods = scanner_methods,
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "processors.privacy._hsscan", "secret_mask's anchor scan on libhyperscan, no Python callbacks.",
    -1, NULL,
};

PyMODINIT_FUNC PyInit__hsscan(void) {
    if (hs_valid_platform() != HS_SUCCESS) {
        PyErr_SetString(PyExc_ImportError, "this CPU lacks the instructions libhyperscan needs");
        return NULL;
    }
    if (PyType_Ready(&ScannerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL)
        return NULL;
    Py_INCREF(&ScannerType);
    if (PyModule_AddObject(m, "Scanner", (PyObject *)&ScannerType) < 0 ||
        PyModule_AddIntConstant(m, "HS_FLAG_CASELESS", HS_FLAG_CASELESS) < 0) {
        Py_DECREF(&ScannerType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

/*
 * processors.privacy._wirewalk: the privacy processors' protobuf wire walker, in C.
 *
 * Why this exists: secret_mask and uuid_normalize edit OTLP requests on the wire (see
 * processors/privacy/attrwalk.py, whose pure-Python `WireRewriter` is the reference and the fallback
 * where this module is not built). In Python, walking to a candidate string and re-encoding
 * the length prefixes around it costs 5-7 us per changed value, which on agent telemetry (a
 * hundred secrets and ids per request) is most of the pipeline's CPU. Here the walk, the
 * bounds checks and the splicing are plain C; Python is only called for the rules themselves
 * (one call per candidate string), so the result is byte-for-byte what the Python walker
 * writes.
 *
 * What it does, in the terms of attrwalk.py:
 *   Walker(nodes, fallback) compiles a plan: `nodes` is a list of messages, each a list of
 *   (tag, kind, sub, rule, nested) steps (kind: 0 sub-message `sub`, 1 string leaf, 2 repeated
 *   KeyValue with the key `rule` and the `nested` rule for maps inside values, 3 AnyValue leaf
 *   with its `nested` rule). A rule is None (every key: TEXT), a tuple of UTF-8 key bytes (those
 *   keys: TEXT, others SKIP) or a mapping str -> 0 SKIP / 1 TEXT / 2 WHOLE (`rule[key]`, so a
 *   dict subclass with __missing__ classifies unseen keys).
 *   Walker.rewrite(raw, offsets, text_fn, whole_fn=None, prefilter=0) -> bytes | None
 *   With `offsets` (sorted ints) only fields holding an offset are entered and only strings
 *   holding one go to text_fn(text, start, end). With offsets=None every planned string is a
 *   candidate if it holds an anchor selected by `prefilter`, and goes to text_fn(text, found)
 *   with the anchors it holds (bit flags, the uuid_normalize anchors: 1 a UUID core
 *   `-hhhh-hhhh-hhhh-`, 2 `/digit`, 4 sixteen hex characters in a row, 8 twenty-six ULID
 *   characters in a row; 0 passes everything), which replaces the anchor scan for rules whose
 *   anchors are this simple. Under a WHOLE key every string leaf goes to whole_fn(text) and
 *   every bytes leaf becomes the string whole_fn(hex). In a map walked in text mode under a mapping
 *   rule, an entry keyed `name`/`key` whose string the rule calls WHOLE makes the entries keyed
 *   `value` WHOLE (unless SKIP): name/value pairs such as {name: DB_PASSWORD, value: ...}.
 *   Bytes it does not handle (truncated, groups, invalid UTF-8 in a string it decodes, a
 *   KeyValue with two keys or values, an AnyValue with two values) raise `fallback`.
 *
 * Output: unchanged ranges are copied; a changed string is written with its new length; every
 * message around it gets its length prefix rewritten when the walk leaves it. A message's
 * prefix slot is only reserved once something inside it changes (so entering a message in
 * which nothing changes costs nothing), with the size of the old prefix; if the new prefix is
 * longer or shorter the message's content is moved once.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_matches.h"

enum { K_MSG = 0, K_STR = 1, K_ATTRS = 2, K_ANY = 3 };
enum { A_SKIP = 0, A_TEXT = 1, A_WHOLE = 2 };
enum { PF_UUID = 1, PF_NUM = 2, PF_HEX = 4, PF_ULID = 8 };
enum { TAG_STRING = 0x0A, TAG_VALUE = 0x12, TAG_ARRAY = 0x2A, TAG_KVLIST = 0x32, TAG_BYTES = 0x3A };
#define MAX_DEPTH 100

typedef struct {
    uint64_t tag;
    int kind;
    Py_ssize_t sub;
    PyObject *rule; /* strong references, released with the plan */
    PyObject *nested;
} Step;

typedef struct {
    Py_ssize_t n;
    Step *steps;
} Node;

typedef struct {
    PyObject_HEAD
    Node *nodes;
    Py_ssize_t nnodes;
    PyObject *fallback;
    int busy; /* rewrites running (a rule may call back in): the plan must not change under them */
} Walker;

typedef struct {
    Py_ssize_t lp, cs, ce; /* where the message's length prefix and content are in the input */
    Py_ssize_t slot;       /* output offset of its prefix slot, -1 while nothing inside changed */
    Py_ssize_t cstart;     /* output offset of its content */
} Frame;

typedef struct {
    Walker *w;
    const uint8_t *buf;
    Py_ssize_t len;
    Py_ssize_t *offs; /* NULL: every planned string is a candidate */
    Py_ssize_t noffs;
    Py_ssize_t ci; /* has_off's cursor: offs[:ci] are all before the last position asked about */
    int prefilter;
    PyObject *text_fn, *whole_fn;
    PyObject *res; /* the output bytes object, NULL until something changes */
    uint8_t *out;
    Py_ssize_t olen, ocap;
    Py_ssize_t last; /* input consumed up to here */
    Frame stack[MAX_DEPTH];
    int depth, written;
    int changed;
} St;

/* -- errors ------------------------------------------------------------------------------- */

static int fail(St *st, const char *why) {
    PyErr_SetString(st->w->fallback, why);
    return -1;
}

/* -- reading ------------------------------------------------------------------------------- */

static int rd_varint_slow(St *st, Py_ssize_t *i, Py_ssize_t end, uint64_t *v);

/* Most tags and lengths are one byte: that case inline, the rest out of line. */
static inline int rd_varint(St *st, Py_ssize_t *i, Py_ssize_t end, uint64_t *v) {
    Py_ssize_t k = *i;
    if (k < end && st->buf[k] < 0x80) {
        *v = st->buf[k];
        *i = k + 1;
        return 0;
    }
    return rd_varint_slow(st, i, end, v);
}

static int rd_varint_slow(St *st, Py_ssize_t *i, Py_ssize_t end, uint64_t *v) {
    uint64_t r = 0;
    int shift = 0;
    Py_ssize_t k = *i;
    while (1) {
        if (k >= end)
            return fail(st, "truncated varint");
        uint8_t b = st->buf[k++];
        r |= (uint64_t)(b & 0x7F) << shift;
        if (b < 0x80)
            break;
        shift += 7;
        if (shift > 63)
            return fail(st, "varint too long");
    }
    *i = k;
    *v = r;
    return 0;
}

/* Skip a field's value of wire type `wt` (not length-delimited) starting at *i. */
static int skip_value(St *st, Py_ssize_t *i, Py_ssize_t end, int wt) {
    uint64_t dummy;
    switch (wt) {
    case 0:
        return rd_varint(st, i, end, &dummy);
    case 1:
        if (end - *i < 8)
            return fail(st, "field overruns its message");
        *i += 8;
        return 0;
    case 5:
        if (end - *i < 4)
            return fail(st, "field overruns its message");
        *i += 4;
        return 0;
    default:
        return fail(st, "unsupported wire type");
    }
}

/* The next field of [*i, end): its tag, and for length-delimited fields where its length prefix
 * and content are. Returns 1 for a length-delimited field, 0 for another, -1 on error. */
static inline int next_field(St *st, Py_ssize_t *i, Py_ssize_t end, uint64_t *tag, Py_ssize_t *lp, Py_ssize_t *cs,
                      Py_ssize_t *ce) {
    if (rd_varint(st, i, end, tag) < 0)
        return -1;
    int wt = (int)(*tag & 7);
    if (wt != 2) {
        if (skip_value(st, i, end, wt) < 0)
            return -1;
        return 0;
    }
    uint64_t ln;
    *lp = *i;
    if (rd_varint(st, i, end, &ln) < 0)
        return -1;
    *cs = *i;
    if (ln > (uint64_t)(end - *cs))
        return fail(st, "field overruns its message");
    *ce = *cs + (Py_ssize_t)ln;
    *i = *ce;
    return 1;
}

/* Whether an offset lies in [a, b) (always true without offsets). The walk asks in input order
 * (each `a` at or after the previous one), so a cursor that only moves forward answers in
 * amortised constant time; a query behind it (not made by this walk, but cheap to allow)
 * restarts it with a binary search. */
static int has_off(St *st, Py_ssize_t a, Py_ssize_t b) {
    if (st->offs == NULL)
        return 1;
    Py_ssize_t k = st->ci;
    if (k > 0 && st->offs[k - 1] >= a) {
        Py_ssize_t lo = 0, hi = k;
        while (lo < hi) {
            Py_ssize_t mid = (lo + hi) >> 1;
            if (st->offs[mid] < a)
                lo = mid + 1;
            else
                hi = mid;
        }
        k = lo;
    }
    while (k < st->noffs && st->offs[k] < a)
        k++;
    st->ci = k;
    return k < st->noffs && st->offs[k] < b;
}

/* -- the id prefilter ------------------------------------------------------------------------ */

/* Byte classes for the prefilter, one table lookup per byte. */
enum { C_HEX = 1, C_ULID = 2, C_DIGIT = 4, C_DASH = 8, C_SLASH = 16 };
static uint8_t byte_class[256];

static void init_byte_class(void) {
    for (int c = 0; c < 256; c++) {
        uint8_t k = 0;
        int low = c | 0x20;
        if (c >= '0' && c <= '9')
            k |= C_HEX | C_ULID | C_DIGIT;
        if (low >= 'a' && low <= 'f')
            k |= C_HEX;
        if (low >= 'a' && low <= 'z' && low != 'i' && low != 'l' && low != 'o' && low != 'u')
            k |= C_ULID; /* Crockford base32, either case */
        if (c == '-')
            k |= C_DASH;
        if (c == '/')
            k |= C_SLASH;
        byte_class[c] = k;
    }
}

static int hex4(const uint8_t *p) {
    return byte_class[p[0]] & byte_class[p[1]] & byte_class[p[2]] & byte_class[p[3]] & C_HEX;
}

/* Which of the enabled anchors [s, e) contains (PF_* flags; every match of a detector contains
 * its anchor, so a string without any is left alone, and the rule can skip detectors whose
 * anchor is missing). */
static int prefilter_flags(int pf, const uint8_t *b, Py_ssize_t s, Py_ssize_t e) {
    int found = 0;
    Py_ssize_t hexrun = 0, ulidrun = 0;
    for (Py_ssize_t i = s; i < e && found != pf; i++) {
        uint8_t k = byte_class[b[i]];
        hexrun = k & C_HEX ? hexrun + 1 : 0;
        ulidrun = k & C_ULID ? ulidrun + 1 : 0;
        if (k & (C_DASH | C_SLASH)) {
            if (k & C_DASH) {
                if (e - i >= 16 && hex4(b + i + 1) && b[i + 5] == '-' && hex4(b + i + 6) && b[i + 10] == '-' &&
                    hex4(b + i + 11) && b[i + 15] == '-')
                    found |= PF_UUID & pf;
            } else if (i + 1 < e && (byte_class[b[i + 1]] & C_DIGIT)) {
                found |= PF_NUM & pf;
            }
        }
        if (hexrun >= 16)
            found |= PF_HEX & pf;
        if (ulidrun >= 26)
            found |= PF_ULID & pf;
    }
    return found;
}

/* -- writing ------------------------------------------------------------------------------- */

/* Make room for `extra` more output bytes. The output is written straight into the bytes object
 * that is returned (allocated at the first change, about the input's size, resized at the end),
 * so a rewrite makes one allocation of the request's size and no extra copy. */
static int reserve(St *st, Py_ssize_t extra) {
    if (st->olen + extra <= st->ocap)
        return 0;
    Py_ssize_t cap = st->res == NULL ? st->len + st->len / 16 + 256 : st->ocap * 2;
    if (cap < st->olen + extra)
        cap = st->olen + extra + 256;
    if (st->res == NULL) {
        st->res = PyBytes_FromStringAndSize(NULL, cap);
        if (st->res == NULL)
            return -1;
    } else if (_PyBytes_Resize(&st->res, cap) < 0) { /* frees the old object and sets res to NULL */
        return -1;
    }
    st->out = (uint8_t *)PyBytes_AS_STRING(st->res);
    st->ocap = cap;
    return 0;
}

static int emit(St *st, const void *p, Py_ssize_t n) {
    if (n <= 0)
        return 0;
    if (reserve(st, n) < 0)
        return -1;
    memcpy(st->out + st->olen, p, (size_t)n);
    st->olen += n;
    return 0;
}

static int varint_len(uint64_t v) {
    int n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static int put_varint(uint8_t *p, uint64_t v) {
    int n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

static int emit_varint(St *st, uint64_t v) {
    if (reserve(st, 10) < 0)
        return -1;
    st->olen += put_varint(st->out + st->olen, v);
    return 0;
}

/* Copy the input up to `upto` (from where the last write stopped). */
static int copy_to(St *st, Py_ssize_t upto) {
    if (emit(st, st->buf + st->last, upto - st->last) < 0)
        return -1;
    if (upto > st->last)
        st->last = upto;
    return 0;
}

static int push(St *st, Py_ssize_t lp, Py_ssize_t cs, Py_ssize_t ce) {
    if (st->depth >= MAX_DEPTH)
        return fail(st, "messages nested too deeply");
    Frame *fr = &st->stack[st->depth++];
    fr->lp = lp;
    fr->cs = cs;
    fr->ce = ce;
    fr->slot = -1;
    fr->cstart = -1;
    return 0;
}

/* Leave the innermost message: if something inside changed, write its new length prefix. */
static int pop(St *st) {
    Frame *fr = &st->stack[--st->depth];
    if (fr->slot < 0)
        return 0;
    st->written--;
    if (copy_to(st, fr->ce) < 0)
        return -1;
    Py_ssize_t n = st->olen - fr->cstart;
    Py_ssize_t old = fr->cs - fr->lp;
    if (n == fr->ce - fr->cs) { /* same length: keep the prefix bytes as they were */
        memcpy(st->out + fr->slot, st->buf + fr->lp, (size_t)old);
        return 0;
    }
    int vl = varint_len((uint64_t)n);
    if (vl != old) {
        if (vl > old && reserve(st, vl - old) < 0)
            return -1;
        memmove(st->out + fr->slot + vl, st->out + fr->cstart, (size_t)n);
        st->olen = fr->slot + vl + n;
    }
    put_varint(st->out + fr->slot, (uint64_t)n);
    return 0;
}

/* Write `head`, then `text` as a length-delimited value, in place of the input [f, ce). */
static int put(St *st, Py_ssize_t f, Py_ssize_t ce, const uint8_t *head, Py_ssize_t hlen, const char *text,
               Py_ssize_t tlen) {
    for (int k = st->written; k < st->depth; k++) { /* first change inside these: give them slots */
        Frame *fr = &st->stack[k];
        if (copy_to(st, fr->lp) < 0)
            return -1;
        Py_ssize_t old = fr->cs - fr->lp;
        if (reserve(st, old) < 0)
            return -1;
        fr->slot = st->olen;
        st->olen += old;
        fr->cstart = st->olen;
        st->last = fr->cs;
    }
    st->written = st->depth;
    if (copy_to(st, f) < 0 || emit(st, head, hlen) < 0 || emit_varint(st, (uint64_t)tlen) < 0 ||
        emit(st, text, tlen) < 0)
        return -1;
    st->last = ce;
    st->changed = 1;
    return 0;
}

/* -- rules ----------------------------------------------------------------------------------- */

static PyObject *decode(St *st, Py_ssize_t s, Py_ssize_t e) {
    PyObject *t = PyUnicode_DecodeUTF8((const char *)st->buf + s, e - s, NULL);
    if (t == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
        fail(st, "invalid UTF-8 in a string");
    }
    return t;
}

/* Write `result` (a rule's new text for `text`) in place of [f, ce) if it differs. Steals
 * `result`. */
static int apply(St *st, PyObject *text, PyObject *result, Py_ssize_t f, Py_ssize_t ce, const uint8_t *head,
                 Py_ssize_t hlen) {
    if (result == NULL)
        return -1;
    int rc = 0;
    if (result != text) {
        if (!PyUnicode_Check(result)) {
            PyErr_SetString(PyExc_TypeError, "a string rule must return str");
            rc = -1;
        } else if (text == NULL || PyUnicode_Compare(text, result) != 0) {
            Py_ssize_t n;
            const char *p = PyUnicode_AsUTF8AndSize(result, &n);
            rc = p == NULL ? -1 : put(st, f, ce, head, hlen, p, n);
        }
    }
    Py_DECREF(result);
    return rc;
}

/* text_fn on the string [cs, ce) (field start f, tag bytes `head`): text_fn(text, start, end)
 * with offsets; without, text_fn(text, found) with the prefilter's anchors found in it. */
static int text_rule(St *st, Py_ssize_t f, Py_ssize_t cs, Py_ssize_t ce, const uint8_t *head, Py_ssize_t hlen) {
    int found = 0;
    if (st->offs != NULL) {
        if (!has_off(st, cs, ce))
            return 0;
    } else if (st->prefilter) {
        found = prefilter_flags(st->prefilter, st->buf, cs, ce);
        if (!found)
            return 0;
    }
    PyObject *text = decode(st, cs, ce);
    if (text == NULL)
        return -1;
    PyObject *result = NULL;
    if (st->offs == NULL) {
        PyObject *a = PyLong_FromLong(found);
        if (a != NULL) {
            PyObject *args[2] = {text, a};
            result = PyObject_Vectorcall(st->text_fn, args, 2, NULL);
            Py_DECREF(a);
        }
    } else {
        PyObject *a = PyLong_FromSsize_t(cs), *b = PyLong_FromSsize_t(ce);
        if (a != NULL && b != NULL) {
            PyObject *args[3] = {text, a, b};
            result = PyObject_Vectorcall(st->text_fn, args, 3, NULL);
        }
        Py_XDECREF(a);
        Py_XDECREF(b);
    }
    int rc = apply(st, text, result, f, ce, head, hlen);
    Py_DECREF(text);
    return rc;
}

static int whole_rule(St *st, PyObject *text, Py_ssize_t f, Py_ssize_t ce) {
    static const uint8_t head[1] = {TAG_STRING};
    if (st->whole_fn == Py_None)
        return 0;
    PyObject *result = PyObject_CallOneArg(st->whole_fn, text);
    return apply(st, text, result, f, ce, head, 1);
}

/* The action for a key under `rule` (see the module comment). */
static int classify(St *st, PyObject *rule, Py_ssize_t ks, Py_ssize_t ke) {
    if (rule == Py_None)
        return A_TEXT;
    if (ks < 0)
        ks = ke = 0;
    if (PyTuple_CheckExact(rule)) {
        Py_ssize_t n = PyTuple_GET_SIZE(rule);
        for (Py_ssize_t k = 0; k < n; k++) {
            PyObject *key = PyTuple_GET_ITEM(rule, k);
            if (PyBytes_GET_SIZE(key) == ke - ks && memcmp(PyBytes_AS_STRING(key), st->buf + ks, (size_t)(ke - ks)) == 0)
                return A_TEXT;
        }
        return A_SKIP;
    }
    PyObject *key = decode(st, ks, ke);
    if (key == NULL)
        return -1;
    PyObject *r = PyObject_GetItem(rule, key);
    Py_DECREF(key);
    if (r == NULL)
        return -1;
    long action = PyLong_AsLong(r);
    Py_DECREF(r);
    if (action == -1 && PyErr_Occurred())
        return -1;
    return (int)action;
}

/* -- walking --------------------------------------------------------------------------------- */

static int any_text(St *st, Py_ssize_t s, Py_ssize_t e, PyObject *nested);
static int any_whole(St *st, Py_ssize_t s, Py_ssize_t e);

/* The value field of an AnyValue: returns 1 and its tag/positions for a string, bytes, array or
 * map value, 0 for none (numbers, booleans, empty), -1 on error. */
static int any_field(St *st, Py_ssize_t s, Py_ssize_t e, uint64_t *vtag, Py_ssize_t *vf, Py_ssize_t *vlp,
                     Py_ssize_t *vcs, Py_ssize_t *vce) {
    int seen = 0, found = 0;
    Py_ssize_t i = s;
    while (i < e) {
        Py_ssize_t f = i, lp = 0, cs = 0, ce = 0;
        uint64_t tag;
        int ld = next_field(st, &i, e, &tag, &lp, &cs, &ce);
        if (ld < 0)
            return -1;
        uint64_t num = tag >> 3;
        if (num >= 1 && num <= 7) {
            if (++seen > 1)
                return fail(st, "AnyValue with two values");
            if (ld) {
                found = 1;
                *vtag = tag;
                *vf = f;
                *vlp = lp;
                *vcs = cs;
                *vce = ce;
            }
        }
    }
    return found;
}

/* The key and value of a KeyValue in [s, e); *ks = -1 without a key, *vcs = -1 without a value. */
static int kv_parts(St *st, Py_ssize_t s, Py_ssize_t e, Py_ssize_t *ks, Py_ssize_t *ke, Py_ssize_t *vlp,
                    Py_ssize_t *vcs, Py_ssize_t *vce) {
    *ks = *ke = *vcs = -1;
    Py_ssize_t i = s;
    while (i < e) {
        Py_ssize_t lp = 0, cs = 0, ce = 0;
        uint64_t tag;
        int ld = next_field(st, &i, e, &tag, &lp, &cs, &ce);
        if (ld < 0)
            return -1;
        if (!ld)
            continue;
        if (tag == TAG_STRING) {
            if (*ks >= 0)
                return fail(st, "KeyValue with two keys");
            *ks = cs;
            *ke = ce;
        } else if (tag == TAG_VALUE) {
            if (*vcs >= 0)
                return fail(st, "KeyValue with two values");
            *vlp = lp;
            *vcs = cs;
            *vce = ce;
        }
    }
    return 0;
}

/* Name/value pairs in maps (attrwalk.NAME_KEYS / VALUE_KEYS, the same exact keys): an entry keyed
 * `name` whose string value the map's rule calls WHOLE makes the entries keyed `value` WHOLE. */
static int key_in(const uint8_t *k, Py_ssize_t n, const char *const *set) {
    for (; *set != NULL; set++)
        if ((Py_ssize_t)strlen(*set) == n && memcmp(*set, k, (size_t)n) == 0)
            return 1;
    return 0;
}
static const char *const NAME_KEYS[] = {"name", "Name", "NAME", "key", "Key", "KEY", NULL};
static const char *const VALUE_KEYS[] = {"value", "Value", "VALUE", NULL};

/* A KeyValue: [lp, s) its length prefix, [s, e) its content. `named`: it is an entry of a map whose
 * name/value pair names a credential (see names_whole), visited whether or not it holds an offset. */
static int kv(St *st, Py_ssize_t lp, Py_ssize_t s, Py_ssize_t e, PyObject *rule, PyObject *nested, int named) {
    Py_ssize_t ks, ke, vlp = 0, vcs, vce = 0;
    if (kv_parts(st, s, e, &ks, &ke, &vlp, &vcs, &vce) < 0)
        return -1;
    if (vcs < 0)
        return 0;
    int forced = named && ks >= 0 && key_in(st->buf + ks, ke - ks, VALUE_KEYS);
    if (named && !forced && !has_off(st, s, e))
        return 0;
    int action = classify(st, rule, ks, ke);
    if (action < 0)
        return -1;
    if (forced && action == A_TEXT)
        action = A_WHOLE;
    if (action == A_SKIP || (action == A_TEXT && !has_off(st, vcs, vce)))
        return 0;
    if (push(st, lp, s, e) < 0 || push(st, vlp, vcs, vce) < 0)
        return -1;
    int rc = action == A_WHOLE ? any_whole(st, vcs, vce) : any_text(st, vcs, vce, nested);
    if (rc < 0)
        return -1;
    if (pop(st) < 0 || pop(st) < 0)
        return -1;
    return 0;
}

static int any_elements(St *st, uint64_t tag, Py_ssize_t lp, Py_ssize_t cs, Py_ssize_t ce, int whole,
                        PyObject *nested);

static int any_text(St *st, Py_ssize_t s, Py_ssize_t e, PyObject *nested) {
    static const uint8_t head[1] = {TAG_STRING};
    uint64_t tag = 0;
    Py_ssize_t f = 0, lp = 0, cs = 0, ce = 0;
    int r = any_field(st, s, e, &tag, &f, &lp, &cs, &ce);
    if (r <= 0)
        return r;
    if (tag == TAG_STRING)
        return text_rule(st, f, cs, ce, head, 1);
    if (tag != TAG_ARRAY && tag != TAG_KVLIST)
        return 0;
    return any_elements(st, tag, lp, cs, ce, 0, nested);
}

static int any_whole(St *st, Py_ssize_t s, Py_ssize_t e) {
    uint64_t tag = 0;
    Py_ssize_t f = 0, lp = 0, cs = 0, ce = 0;
    int r = any_field(st, s, e, &tag, &f, &lp, &cs, &ce);
    if (r <= 0)
        return r;
    if (tag == TAG_STRING) {
        PyObject *text = decode(st, cs, ce);
        if (text == NULL)
            return -1;
        int rc = whole_rule(st, text, f, ce);
        Py_DECREF(text);
        return rc;
    }
    if (tag == TAG_BYTES) { /* becomes a string: the mask of its hex */
        static const char digits[] = "0123456789abcdef";
        PyObject *hex = PyUnicode_New((ce - cs) * 2, 127);
        if (hex == NULL)
            return -1;
        Py_UCS1 *p = PyUnicode_1BYTE_DATA(hex);
        for (Py_ssize_t k = cs; k < ce; k++) {
            *p++ = (Py_UCS1)digits[st->buf[k] >> 4];
            *p++ = (Py_UCS1)digits[st->buf[k] & 15];
        }
        /* always written (a bytes value becomes a string), even if the rule returns the hex */
        static const uint8_t head[1] = {TAG_STRING};
        PyObject *result = st->whole_fn == Py_None ? Py_NewRef(hex) : PyObject_CallOneArg(st->whole_fn, hex);
        int rc = apply(st, NULL, result, f, ce, head, 1);
        Py_DECREF(hex);
        return rc;
    }
    if (tag != TAG_ARRAY && tag != TAG_KVLIST)
        return 0;
    return any_elements(st, tag, lp, cs, ce, 1, NULL);
}

/* Whether the map [s, e) holds a name/value pair that names a credential: its KeyValues in order,
 * until one keyed as in NAME_KEYS holds a string that `rule` (a mapping) calls WHOLE. 1, 0 or -1. */
static int names_whole(St *st, Py_ssize_t s, Py_ssize_t e, PyObject *rule) {
    Py_ssize_t i = s;
    while (i < e) {
        Py_ssize_t elp = 0, ecs = 0, ece = 0;
        uint64_t etag;
        int ld = next_field(st, &i, e, &etag, &elp, &ecs, &ece);
        if (ld < 0)
            return -1;
        if (!ld || etag != TAG_STRING)
            continue;
        Py_ssize_t ks, ke, vlp = 0, vcs, vce = 0;
        if (kv_parts(st, ecs, ece, &ks, &ke, &vlp, &vcs, &vce) < 0)
            return -1;
        if (vcs < 0 || ks < 0 || !key_in(st->buf + ks, ke - ks, NAME_KEYS))
            continue;
        uint64_t vtag = 0;
        Py_ssize_t vf = 0, slp = 0, scs = 0, sce = 0;
        int r = any_field(st, vcs, vce, &vtag, &vf, &slp, &scs, &sce);
        if (r < 0)
            return -1;
        if (r == 0 || vtag != TAG_STRING)
            continue;
        int action = classify(st, rule, scs, sce);
        if (action < 0)
            return -1;
        if (action == A_WHOLE)
            return 1;
    }
    return 0;
}

/* The elements of an array or map value (`tag` says which; [lp, cs) its length prefix, [cs, ce)
 * its content): each AnyValue of an array, each KeyValue of a map. In text mode only the elements
 * holding an offset, map keys classified by `nested` (and a map's name/value pair, see kv); in whole
 * mode every element's every leaf. */
static int any_elements(St *st, uint64_t tag, Py_ssize_t lp, Py_ssize_t cs, Py_ssize_t ce, int whole,
                        PyObject *nested) {
    if (push(st, lp, cs, ce) < 0)
        return -1;
    int named = 0;
    if (tag == TAG_KVLIST && !whole && nested != Py_None && !PyTuple_CheckExact(nested)) {
        named = names_whole(st, cs, ce, nested);
        if (named < 0)
            return -1;
    }
    Py_ssize_t i = cs;
    while (i < ce) {
        Py_ssize_t elp = 0, ecs = 0, ece = 0;
        uint64_t etag;
        int ld = next_field(st, &i, ce, &etag, &elp, &ecs, &ece);
        if (ld < 0)
            return -1;
        if (!ld || etag != TAG_STRING || (!whole && !named && !has_off(st, ecs, ece)))
            continue;
        if (tag == TAG_KVLIST && !whole) {
            if (kv(st, elp, ecs, ece, nested, nested, named) < 0)
                return -1;
            continue;
        }
        if (push(st, elp, ecs, ece) < 0)
            return -1;
        if (tag == TAG_ARRAY) {
            if ((whole ? any_whole(st, ecs, ece) : any_text(st, ecs, ece, nested)) < 0)
                return -1;
        } else {
            Py_ssize_t ks, ke, vlp = 0, vcs, vce = 0;
            if (kv_parts(st, ecs, ece, &ks, &ke, &vlp, &vcs, &vce) < 0)
                return -1;
            if (vcs >= 0 && (push(st, vlp, vcs, vce) < 0 || any_whole(st, vcs, vce) < 0 || pop(st) < 0))
                return -1;
        }
        if (pop(st) < 0)
            return -1;
    }
    return pop(st);
}

static const Step *find_step(const Node *nd, uint64_t tag) {
    for (Py_ssize_t k = 0; k < nd->n; k++)
        if (nd->steps[k].tag == tag)
            return &nd->steps[k];
    return NULL;
}

static int walk_msg(St *st, Py_ssize_t s, Py_ssize_t e, Py_ssize_t node) {
    const Node *nd = &st->w->nodes[node];
    Py_ssize_t i = s;
    while (i < e) {
        if (!has_off(st, i, e))
            return 0; /* nothing more to find in this message */
        Py_ssize_t f = i, lp = 0, cs = 0, ce = 0;
        uint64_t tag;
        int ld = next_field(st, &i, e, &tag, &lp, &cs, &ce);
        if (ld < 0)
            return -1;
        if (!ld)
            continue;
        const Step *sp = find_step(nd, tag);
        if (sp == NULL || !has_off(st, cs, ce))
            continue;
        switch (sp->kind) {
        case K_MSG:
            if (push(st, lp, cs, ce) < 0 || walk_msg(st, cs, ce, sp->sub) < 0 || pop(st) < 0)
                return -1;
            break;
        case K_STR:
            if (text_rule(st, f, cs, ce, st->buf + f, lp - f) < 0)
                return -1;
            break;
        case K_ATTRS:
            if (kv(st, lp, cs, ce, sp->rule, sp->nested, 0) < 0)
                return -1;
            break;
        default: /* K_ANY */
            if (push(st, lp, cs, ce) < 0 || any_text(st, cs, ce, sp->nested) < 0 || pop(st) < 0)
                return -1;
        }
    }
    return 0;
}

/* -- the Walker type ------------------------------------------------------------------------- */

static void walker_free_nodes(Walker *w) {
    if (w->nodes != NULL) {
        for (Py_ssize_t k = 0; k < w->nnodes; k++) {
            for (Py_ssize_t j = 0; j < w->nodes[k].n; j++) {
                Py_CLEAR(w->nodes[k].steps[j].rule);
                Py_CLEAR(w->nodes[k].steps[j].nested);
            }
            PyMem_Free(w->nodes[k].steps);
        }
        PyMem_Free(w->nodes);
        w->nodes = NULL;
    }
}

static int check_rule(PyObject *rule) {
    if (rule == Py_None)
        return 0;
    if (PyTuple_CheckExact(rule)) {
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(rule); k++)
            if (!PyBytes_CheckExact(PyTuple_GET_ITEM(rule, k))) {
                PyErr_SetString(PyExc_TypeError, "a tuple rule holds the selected keys as bytes");
                return -1;
            }
        return 0;
    }
    if (!PyMapping_Check(rule)) {
        PyErr_SetString(PyExc_TypeError, "a rule is None, a tuple of key bytes or a mapping");
        return -1;
    }
    return 0;
}

static int walker_init(Walker *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"nodes", "fallback", NULL};
    PyObject *nodes, *fallback;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O", kwlist, &PyList_Type, &nodes, &fallback))
        return -1;
    if (!PyExceptionClass_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "fallback must be an exception class");
        return -1;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "cannot re-initialise a Walker while it rewrites");
        return -1;
    }
    walker_free_nodes(self);
    Py_ssize_t nn = PyList_GET_SIZE(nodes);
    if (nn == 0) {
        PyErr_SetString(PyExc_ValueError, "a plan has at least the request's node");
        return -1;
    }
    self->nodes = PyMem_Calloc((size_t)nn, sizeof(Node));
    if (self->nodes == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->nnodes = nn;
    for (Py_ssize_t k = 0; k < nn; k++) {
        PyObject *steps = PyList_GET_ITEM(nodes, k);
        if (!PyList_Check(steps)) {
            PyErr_SetString(PyExc_TypeError, "each node is a list of steps");
            return -1;
        }
        Py_ssize_t ns = PyList_GET_SIZE(steps);
        self->nodes[k].steps = PyMem_Calloc((size_t)(ns ? ns : 1), sizeof(Step));
        if (self->nodes[k].steps == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->nodes[k].n = ns;
        for (Py_ssize_t j = 0; j < ns; j++) {
            Step *sp = &self->nodes[k].steps[j];
            unsigned long long tag;
            int kind;
            PyObject *rule, *nested;
            if (!PyArg_ParseTuple(PyList_GET_ITEM(steps, j), "KinOO;a step is (tag, kind, sub, rule, nested)", &tag,
                                  &kind, &sp->sub, &rule, &nested))
                return -1;
            if (kind < K_MSG || kind > K_ANY || (kind == K_MSG && (sp->sub < 0 || sp->sub >= nn))) {
                PyErr_SetString(PyExc_ValueError, "a step's kind or sub-message is out of range");
                return -1;
            }
            if (check_rule(rule) < 0 || check_rule(nested) < 0)
                return -1;
            sp->tag = tag;
            sp->kind = kind;
            sp->rule = Py_NewRef(rule);
            sp->nested = Py_NewRef(nested);
        }
    }
    Py_INCREF(fallback);
    Py_XSETREF(self->fallback, fallback);
    return 0;
}

static void walker_dealloc(Walker *self) {
    PyObject_GC_UnTrack(self);
    walker_free_nodes(self);
    Py_CLEAR(self->fallback);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int walker_traverse(Walker *self, visitproc visit, void *arg) {
    Py_VISIT(self->fallback);
    if (self->nodes != NULL)
        for (Py_ssize_t k = 0; k < self->nnodes; k++)
            for (Py_ssize_t j = 0; j < self->nodes[k].n; j++) {
                Py_VISIT(self->nodes[k].steps[j].rule);
                Py_VISIT(self->nodes[k].steps[j].nested);
            }
    return 0;
}

static int walker_clear(Walker *self) {
    walker_free_nodes(self);
    Py_CLEAR(self->fallback);
    return 0;
}

static PyObject *walker_rewrite(Walker *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"raw", "offsets", "text_fn", "whole_fn", "prefilter", NULL};
    Py_buffer raw;
    PyObject *offsets, *text_fn, *whole_fn = Py_None;
    int prefilter = 0;
    if (self->nodes == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Walker not initialised");
        return NULL;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*OO|Oi", kwlist, &raw, &offsets, &text_fn, &whole_fn, &prefilter))
        return NULL;
    St *st = PyMem_Calloc(1, sizeof(St));
    PyObject *fast = NULL, *res = NULL;
    if (st == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    st->w = self;
    st->buf = raw.buf;
    st->len = raw.len;
    st->text_fn = text_fn;
    st->whole_fn = whole_fn;
    st->prefilter = prefilter;
    if (offsets != Py_None) {
        fast = PySequence_Fast(offsets, "offsets must be a sequence of ints");
        if (fast == NULL)
            goto done;
        Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
        st->offs = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n ? n : 1));
        if (st->offs == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        st->noffs = n;
        PyObject **items = PySequence_Fast_ITEMS(fast);
        for (Py_ssize_t k = 0; k < n; k++) {
            st->offs[k] = PyLong_AsSsize_t(items[k]);
            if (st->offs[k] == -1 && PyErr_Occurred())
                goto done;
            if (k && st->offs[k] < st->offs[k - 1]) {
                PyErr_SetString(PyExc_ValueError, "offsets must be sorted");
                goto done;
            }
        }
    }
    self->busy++;
    int walked = walk_msg(st, 0, raw.len, 0);
    self->busy--;
    if (walked < 0)
        goto done;
    if (!st->changed) {
        res = Py_NewRef(Py_None);
        goto done;
    }
    if (copy_to(st, raw.len) < 0 || _PyBytes_Resize(&st->res, st->olen) < 0)
        goto done;
    res = st->res;
    st->res = NULL;
done:
    if (st != NULL) {
        PyMem_Free(st->offs);
        Py_XDECREF(st->res);
        PyMem_Free(st);
    }
    Py_XDECREF(fast);
    PyBuffer_Release(&raw);
    return res;
}

static PyObject *py_prefilter(PyObject *mod, PyObject *args) {
    Py_buffer b;
    int flags;
    if (!PyArg_ParseTuple(args, "y*i", &b, &flags))
        return NULL;
    int r = prefilter_flags(flags, b.buf, 0, b.len);
    PyBuffer_Release(&b);
    return PyLong_FromLong(r);
}

/* -- the hyperscan match collector ----------------------------------------------------------- */

/* hyperscan's Python binding calls a Python callable for every match, with the GIL taken back
 * each time; a Python function there costs a frame per match (a hundred and more per request on
 * agent telemetry). This callable does the bookkeeping of processors/privacy/_matches.h in C instead;
 * `take()` returns the matches sorted and resets it. (processors/privacy/_hsscan.c, where it is built,
 * goes further: it calls libhyperscan itself, with no callback into Python at all.) */
typedef struct {
    PyObject_HEAD
    Matches m;
} Collector;

static int collector_init(Collector *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"adj", "anchor_of", "gate_from", NULL};
    PyObject *adj, *anchor_of;
    Py_ssize_t gate_from;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!n", kwlist, &PyTuple_Type, &adj, &PyTuple_Type, &anchor_of,
                                     &gate_from))
        return -1;
    return matches_init(&self->m, adj, anchor_of, gate_from);
}

static void collector_dealloc(Collector *self) {
    matches_free(&self->m);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *collector_call(Collector *self, PyObject *args, PyObject *kwds) {
    if (PyTuple_GET_SIZE(args) < 3) {
        PyErr_SetString(PyExc_TypeError, "called as (id, from, to, flags, context)");
        return NULL;
    }
    Py_ssize_t id = PyLong_AsSsize_t(PyTuple_GET_ITEM(args, 0));
    Py_ssize_t to = PyLong_AsSsize_t(PyTuple_GET_ITEM(args, 2));
    if (PyErr_Occurred())
        return NULL;
    if (id < 0 || id >= self->m.n_ids) {
        PyErr_SetString(PyExc_ValueError, "unknown expression id");
        return NULL;
    }
    if (matches_add(&self->m, (unsigned int)id, (unsigned long long)to) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *collector_take(Collector *self, PyObject *unused) {
    return matches_take(&self->m);
}

static PyMethodDef collector_methods[] = {
    {"take", (PyCFunction)collector_take, METH_NOARGS,
     "take() -> (offsets, anchor indexes, gate expression ids): what was collected, sorted by offset; resets"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CollectorType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "processors.privacy._wirewalk.Collector",
    .tp_basicsize = sizeof(Collector),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A hyperscan match_event_handler that collects anchor offsets in C (see AnchorScanner).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)collector_init,
    .tp_dealloc = (destructor)collector_dealloc,
    .tp_call = (ternaryfunc)collector_call,
    .tp_methods = collector_methods,
};

static PyMethodDef walker_methods[] = {
    {"rewrite", (PyCFunction)(void (*)(void))walker_rewrite, METH_VARARGS | METH_KEYWORDS,
     "rewrite(raw, offsets, text_fn, whole_fn=None, prefilter=0) -> bytes | None"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject WalkerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "processors.privacy._wirewalk.Walker",
    .tp_basicsize = sizeof(Walker),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A compiled wire-walk plan (see processors/privacy/attrwalk.py WireRewriter).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)walker_init,
    .tp_dealloc = (destructor)walker_dealloc,
    .tp_traverse = (traverseproc)walker_traverse,
    .tp_clear = (inquiry)walker_clear,
    .tp_methods = walker_methods,
};

static PyMethodDef module_methods[] = {
    {"prefilter", py_prefilter, METH_VARARGS, "prefilter(data, flags) -> int: the enabled id anchors (PF_* flags) data holds"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "processors.privacy._wirewalk", "The privacy processors' wire walker in C.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__wirewalk(void) {
    init_byte_class();
    if (PyType_Ready(&WalkerType) < 0 || PyType_Ready(&CollectorType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL)
        return NULL;
    Py_INCREF(&WalkerType);
    if (PyModule_AddObject(m, "Walker", (PyObject *)&WalkerType) < 0) {
        Py_DECREF(&WalkerType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&CollectorType);
    if (PyModule_AddObject(m, "Collector", (PyObject *)&CollectorType) < 0) {
        Py_DECREF(&CollectorType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "PF_UUID", PF_UUID) < 0 || PyModule_AddIntConstant(m, "PF_NUM", PF_NUM) < 0 ||
        PyModule_AddIntConstant(m, "PF_HEX", PF_HEX) < 0 || PyModule_AddIntConstant(m, "PF_ULID", PF_ULID) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

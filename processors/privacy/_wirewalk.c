/*
 * processors.privacy._wirewalk: the privacy processors' protobuf wire walker, in C.
 *
 * secret_mask and uuid_normalize edit OTLP requests on the wire: the walker goes through a
 * serialized request along a plan (which fields hold the strings a rule looks at), hands the
 * strings it finds to the rules, and writes the request back as it goes: unchanged byte ranges
 * are copied, a changed string is written with its new length, and every message around it gets
 * its length prefix re-encoded when the walk leaves it. Nothing else is decoded or encoded.
 * processors/privacy/walker.py has the same walk in Python (`PyWalker`, the fallback where this
 * module is not built); both write the same bytes (tests/unit/processors/privacy/test_wirewalk_native.py).
 *
 * Stages. One walk applies the rules of up to MAX_STAGES processors, in order, to each string
 * (secret_mask and uuid_normalize fused: one walk for both). Each stage has its own leaves in the
 * plan and its own way of choosing the strings it looks at:
 *   MODE_MASK   the strings holding an offset of the request's anchor scan; the masking loop of
 *               processors/privacy/masker.py (`Masker.mask_at` at the positions the anchors give,
 *               the same `re` match and validators) runs here in C, see mask_string (credential_pair's
 *               `key=value` form is matched without `re` where that is exact, see pair_match);
 *   MODE_TEXT   the strings holding one of the id anchors selected by `prefilter` (bit flags: 1 a
 *               UUID core `-hhhh-hhhh-hhhh-`, 2 `/digit`, 4 sixteen hex characters in a row, 8
 *               twenty-six ULID characters in a row; 0 selects every string), which go to
 *               text_fn(text, flags found).
 * A stage's key rule decides per attribute: SKIP, TEXT (strings as above) or WHOLE (every string
 * leaf goes to whole_fn, every bytes leaf becomes the string whole_fn(hex)). When an earlier stage
 * changed a string, a later stage looks at the new text whole: a MODE_MASK stage through full_fn,
 * a MODE_TEXT stage with the flags of the new text.
 *
 * The plan, as walker.py builds it (`native_plan`):
 *   Walker(nodes, nstages, fallback); nodes[k] = (reach, steps), `reach` the bit set of stages with
 *   leaves below node k; a step is (tag, kind, sub, owner, leaves): kind 0 a sub-message (node
 *   `sub`; `owner`: count per owner message, see below), 1 a string, 2 a repeated KeyValue, 3 an
 *   AnyValue; `leaves` one entry per stage, None or (rule, nested). A rule is None (every key:
 *   TEXT), a tuple of UTF-8 key bytes (those TEXT, others SKIP) or a mapping str -> 0/1/2
 *   (`rule[key]`, so a dict subclass with __missing__ classifies unseen keys); `nested` is the rule
 *   for the keys of maps inside values. In a map walked under a mapping rule, an entry keyed
 *   `name`/`key` whose string the rule calls WHOLE makes the entries keyed `value` WHOLE (unless
 *   SKIP): name/value pairs such as {name: DB_PASSWORD, value: ...}.
 *
 *   Walker.rewrite(raw, stages, offsets=None, ids=None) -> bytes | None (None: nothing changed)
 *   stages[k] = (MODE_MASK, engine, whole_fn, owners) or (MODE_TEXT, prefilter, text_fn, whole_fn,
 *   owners, uuid); uuid = (replacement, counts) or None: text_fn is uuid_normalize's normalize_found, whose
 *   UUID-only case (ASCII text, no hex, ULID or numeric-segment anchor) runs here (uuid_template); engine = (match, rules, info, full_fn, fixed, replacer, is_mask, counts, pair_check,
 *   known_keys, stopwords, sensitive) or None (no value detector); `owners` None or a list that gets (content offset, n) for each owner message
 *   in which the stage changed n values. Bytes it does not handle (truncated, invalid UTF-8 in a
 *   string it decodes, a KeyValue with two keys or values, an AnyValue with two values, messages
 *   nested deeper than MAX_DEPTH) raise `fallback`.
 *
 * Output: a message's prefix slot is only reserved once something inside it changes (entering a
 * message in which nothing changes costs nothing), with the size of the old prefix; if the new
 * prefix is longer or shorter the message's content is moved once.
 *
 * Also here: `Collector`, hyperscan's Python binding's match callback (see _matches.h), and
 * `prefilter(data, flags)`, the id anchors of `data`.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_matches.h"

enum { K_MSG = 0, K_STR = 1, K_ATTRS = 2, K_ANY = 3 };
enum { A_SKIP = 0, A_TEXT = 1, A_WHOLE = 2 };
enum { MODE_MASK = 0, MODE_TEXT = 1 };
enum { PF_UUID = 1, PF_NUM = 2, PF_HEX = 4, PF_ULID = 8 };
enum { INFO_PAIR = -1000000, INFO_FULL = -1000001 };
enum { TAG_STRING = 0x0A, TAG_VALUE = 0x12, TAG_ARRAY = 0x2A, TAG_KVLIST = 0x32, TAG_BYTES = 0x3A };
#define MAX_DEPTH 128 /* frames: one per message entered; upb refuses to decode messages nested deeper than 100 */
#define MAX_STAGES 4
#define MAX_GROUP_DEPTH 100 /* as pipeline/wire.py */

typedef struct {
    PyObject *rule, *nested; /* borrowed from the step's leaves tuple */
} Leaf;

typedef struct {
    uint64_t tag;
    int kind;
    Py_ssize_t sub;
    int owner;
    int present; /* bit set of stages with a leaf here */
    Leaf leaf[MAX_STAGES];
} Step;

typedef struct {
    int reach;
    Py_ssize_t n;
    Step *steps;
} Node;

typedef struct {
    PyObject_HEAD
    Node *nodes;
    Py_ssize_t nnodes;
    int nstages;
    PyObject *plan; /* the nodes list, which owns every rule */
    PyObject *fallback;
    int busy; /* rewrites running (a rule may call back in): the plan must not change under them */
} Walker;

/* One stage's work for this request. */
typedef struct {
    int mode;
    int prefilter;
    PyObject *text_fn, *whole_fn, *owners; /* borrowed; None where absent */
    /* MODE_TEXT's UUID template (uuid_normalize.Normalizer.normalize_found's UUID-only case, done here):
     * the replacement's UTF-8 and the counts dict, or NULL (borrowed) */
    const char *uuid_repl;
    Py_ssize_t uuid_repl_len;
    PyObject *uuid_counts;
    /* MODE_MASK: the engine (borrowed from its tuple) */
    PyObject *match, *rules, *full_fn, *fixed, *replacer, *is_mask, *counts;
    PyObject *pair_check, *classify, *stopwords; /* credential_pair's validator, done here (pair_key_ok) */
    long sensitive;
    Py_ssize_t pair_colon, pair_eq; /* credential_pair's groups where pair_match may stand in for the regex (0: not) */
    const char *fixed_utf8;
    Py_ssize_t fixed_len;
    int fixed_ascii;
    Py_ssize_t *info; /* per anchor index: start offset, INFO_PAIR or INFO_FULL */
    Py_ssize_t ninfo;
} Stage;

typedef struct {
    Py_ssize_t lp, cs, ce; /* where the message's length prefix and content are in the input */
    Py_ssize_t slot;       /* output offset of its prefix slot, -1 while nothing inside changed */
    Py_ssize_t cstart;     /* output offset of its content */
    int owner;
    Py_ssize_t count[MAX_STAGES];
} Frame;

/* What each stage does with the value being walked: its action and the rule for nested map keys. */
typedef struct {
    int act[MAX_STAGES];
    PyObject *nested[MAX_STAGES];
    int named[MAX_STAGES]; /* an entry of a map whose name/value pair names a credential */
} Ctx;

typedef struct {
    Walker *w;
    const uint8_t *buf;
    Py_ssize_t len;
    int nstages;
    Stage stage[MAX_STAGES];
    int mask_stage;   /* the MODE_MASK stage owning the offsets, -1 if none */
    int text_stages;  /* bit set of MODE_TEXT stages */
    Py_ssize_t *offs; /* the mask stage's anchor offsets, sorted, and their anchor indexes */
    Py_ssize_t *ids;
    Py_ssize_t noffs;
    Py_ssize_t ci; /* has_off's cursor: offs[:ci] are all before the last position asked about */
    PyObject *res; /* the output bytes object, NULL until something changes */
    uint8_t *out;
    Py_ssize_t olen, ocap;
    Py_ssize_t last; /* input consumed up to here */
    Frame stack[MAX_DEPTH];
    int depth, written;
    int changed;
    Py_ssize_t pf_at;          /* the string whose id anchors pf_found holds (its content offset), -1 none */
    int pf_found[MAX_STAGES];  /* per text stage, prefilter_flags of that string's input bytes */
} St;

static PyObject *s_lastindex, *s_span, *s_end;

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

static int skip_value(St *st, Py_ssize_t *i, Py_ssize_t end, uint64_t tag, int depth);

/* Skip a group's fields up to its end-group tag (the same field number). */
static int skip_group(St *st, Py_ssize_t *i, Py_ssize_t end, uint64_t tag, int depth) {
    if (depth >= MAX_GROUP_DEPTH)
        return fail(st, "groups nested too deeply");
    while (1) {
        uint64_t t;
        if (rd_varint(st, i, end, &t) < 0)
            return -1;
        if ((t & 7) == 4) {
            if (t >> 3 != tag >> 3)
                return fail(st, "mismatched end-group tag");
            return 0;
        }
        if (skip_value(st, i, end, t, depth + 1) < 0)
            return -1;
    }
}

/* Skip the value of a field with tag `tag` starting at *i. */
static int skip_value(St *st, Py_ssize_t *i, Py_ssize_t end, uint64_t tag, int depth) {
    uint64_t v;
    switch (tag & 7) {
    case 0:
        return rd_varint(st, i, end, &v);
    case 1:
        if (end - *i < 8)
            return fail(st, "field overruns its message");
        *i += 8;
        return 0;
    case 2:
        if (rd_varint(st, i, end, &v) < 0)
            return -1;
        if (v > (uint64_t)(end - *i))
            return fail(st, "field overruns its message");
        *i += (Py_ssize_t)v;
        return 0;
    case 3:
        return skip_group(st, i, end, tag, depth);
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
    if ((*tag & 7) != 2) {
        if ((*tag >> 3) == 0)
            return fail(st, "field number 0");
        return skip_value(st, i, end, *tag, 0) < 0 ? -1 : 0;
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

/* Whether an offset of the mask stage lies in [a, b). The walk asks in input order (each `a` at or
 * after the previous one), so a cursor that only moves forward answers in amortised constant time;
 * a query behind it restarts it with a binary search. */
static int has_off(St *st, Py_ssize_t a, Py_ssize_t b) {
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

/* Whether the walk must look into [a, b) for the stages in `stages` (a bit set): a text stage
 * always, the mask stage where an offset lies. */
static int worth(St *st, int stages, Py_ssize_t a, Py_ssize_t b) {
    if (stages & st->text_stages)
        return 1;
    return st->mask_stage >= 0 && (stages >> st->mask_stage & 1) && has_off(st, a, b);
}

/* -- the id prefilter ------------------------------------------------------------------------ */

/* Byte classes, one table lookup per byte. */
enum { C_HEX = 1, C_ULID = 2, C_DIGIT = 4, C_DASH = 8, C_SLASH = 16, C_KEY = 32, C_TOKEN = 64, C_PAIR = 128 };
static uint8_t byte_class[256];

static void init_byte_class(void) {
    for (int c = 0; c < 256; c++) {
        uint8_t k = 0;
        int low = c | 0x20;
        int alnum = (c >= '0' && c <= '9') || (low >= 'a' && low <= 'z');
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
        if (alnum || c == '_' || c == '.' || c == '-')
            k |= C_KEY; /* masker.KEY_CHARS */
        if (alnum || c == '_' || c == '-')
            k |= C_TOKEN; /* masker._TOKEN_CHARS */
        if (c < 0x80 && c != 0 && !(c >= '\t' && c <= '\r') && !(c >= 0x1c && c <= ' ') && !strchr("&,;\"'<>()[]{}\\", c))
            k |= C_PAIR; /* secret_rules._PAIR_CHAR, ASCII (the strings pair_match sees are ASCII) */
        byte_class[c] = k;
    }
}

static int hex4(const uint8_t *p) {
    return byte_class[p[0]] & byte_class[p[1]] & byte_class[p[2]] & byte_class[p[3]] & C_HEX;
}

/* Which of the enabled id anchors `pf` [s, e) holds (every match of an id detector contains its
 * anchor, so a string without any is left alone, and the rule can skip detectors whose anchor is
 * missing). */
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

/* Copy the input up to `upto` (from where the last write stopped). */
static int copy_to(St *st, Py_ssize_t upto) {
    if (emit(st, st->buf + st->last, upto - st->last) < 0)
        return -1;
    if (upto > st->last)
        st->last = upto;
    return 0;
}

static int push(St *st, Py_ssize_t lp, Py_ssize_t cs, Py_ssize_t ce, int owner) {
    if (st->depth >= MAX_DEPTH)
        return fail(st, "messages nested too deeply");
    Frame *fr = &st->stack[st->depth++];
    fr->lp = lp;
    fr->cs = cs;
    fr->ce = ce;
    fr->slot = -1;
    fr->cstart = -1;
    fr->owner = owner;
    memset(fr->count, 0, sizeof fr->count);
    return 0;
}

/* An owner message left: report the values each counting stage changed in it. */
static int report_owner(St *st, Frame *fr) {
    for (int k = 0; k < st->nstages; k++) {
        if (!fr->count[k] || st->stage[k].owners == Py_None)
            continue;
        PyObject *item = Py_BuildValue("(nn)", fr->cs, fr->count[k]);
        if (item == NULL || PyList_Append(st->stage[k].owners, item) < 0) {
            Py_XDECREF(item);
            return -1;
        }
        Py_DECREF(item);
    }
    return 0;
}

/* Leave the innermost message: if something inside changed, write its new length prefix. */
static int pop(St *st) {
    Frame *fr = &st->stack[--st->depth];
    if (fr->owner && report_owner(st, fr) < 0)
        return -1;
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
    uint8_t lenbuf[10];
    int ll = put_varint(lenbuf, (uint64_t)tlen);
    if (copy_to(st, f) < 0 || emit(st, head, hlen) < 0 || emit(st, lenbuf, ll) < 0 || emit(st, text, tlen) < 0)
        return -1;
    st->last = ce;
    st->changed = 1;
    return 0;
}

/* A stage changed a value: count it in the innermost owner message, if the stage counts. */
static void count_change(St *st, int k) {
    if (st->stage[k].owners == Py_None)
        return;
    for (int d = st->depth - 1; d >= 0; d--)
        if (st->stack[d].owner) {
            st->stack[d].count[k]++;
            return;
        }
}

/* -- the masking loop (masker.py `Masker.mask_at` at the anchors' positions) ------------------------ */

static PyObject *decode(St *st, Py_ssize_t s, Py_ssize_t e) {
    PyObject *t = PyUnicode_DecodeUTF8((const char *)st->buf + s, e - s, NULL);
    if (t == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
        fail(st, "invalid UTF-8 in a string");
    }
    return t;
}

static int count_detector(PyObject *counts, PyObject *name) {
    PyObject *old = PyDict_GetItemWithError(counts, name);
    if (old == NULL && PyErr_Occurred())
        return -1;
    long n = old == NULL ? 0 : PyLong_AsLong(old);
    if (n == -1 && PyErr_Occurred())
        return -1;
    PyObject *v = PyLong_FromLong(n + 1);
    if (v == NULL)
        return -1;
    int rc = PyDict_SetItem(counts, name, v);
    Py_DECREF(v);
    return rc;
}

/* masker.PAIR_TAIL after the key's run ending at i (masker._PAIR_REST): an optional (escaped) closing quote
 * and blanks, up to a separator `:`, `=` or `,`; its offset, or -1. */
static Py_ssize_t pair_separator(const uint8_t *s, Py_ssize_t n, Py_ssize_t i /* the end of the key's run */) {
    Py_ssize_t j = i;
    while (j < n && s[j] == '\\')
        j++;
    if (j < n && (s[j] == '"' || s[j] == '\''))
        i = j + 1;
    while (i < n && (s[i] == ' ' || s[i] == '\t'))
        i++;
    return i < n && (s[i] == ':' || s[i] == '=' || s[i] == ',') ? i : -1;
}

/* A run of characters found once for a string and reused by every position inside it: a position in
 * [lo, hi) has the run's answer `at`. Without it, anchors repeated inside one long run (`tokentoken...`,
 * `tokenizer=tokenizer=...`) would each scan the run again: quadratic in the string, which one request could
 * use to hold the event loop for minutes. */
typedef struct {
    Py_ssize_t lo, hi, at;
} Run;

/* masker.positions for the ASCII string [cs, ce): the sorted distinct positions, or -1 for a
 * FULL anchor. `pos` has room for every offset in the string. */
static Py_ssize_t mask_positions(St *st, Stage *sg, Py_ssize_t cs, Py_ssize_t ce, Py_ssize_t *pos) {
    const uint8_t *s = st->buf + cs;
    Py_ssize_t n = ce - cs, np = 0;
    Run keys = {0, 0, -1};
    has_off(st, cs, ce);
    for (Py_ssize_t k = st->ci; k < st->noffs && st->offs[k] < ce; k++) {
        Py_ssize_t q = st->offs[k] - cs, a = st->ids[k];
        Py_ssize_t info = a >= 0 && a < sg->ninfo ? sg->info[a] : INFO_FULL;
        Py_ssize_t p;
        if (info == INFO_FULL)
            return -1;
        if (info == INFO_PAIR) {
            if (q < keys.lo || q >= keys.hi) { /* the separator after the key's run holding q */
                Py_ssize_t i = q;
                while (i < n && (byte_class[s[i]] & C_KEY))
                    i++;
                keys = (Run){q, i, pair_separator(s, n, i)};
            }
            p = keys.at;
            if (p < 0)
                continue;
        } else {
            p = q + info;
        }
        Py_ssize_t j = np++; /* insertion sort: they nearly always come in order */
        while (j > 0 && pos[j - 1] > p) {
            pos[j] = pos[j - 1];
            j--;
        }
        pos[j] = p;
    }
    Py_ssize_t m = 0;
    for (Py_ssize_t k = 0; k < np; k++)
        if (m == 0 || pos[m - 1] != pos[k])
            pos[m++] = pos[k];
    return m;
}

typedef struct {
    Py_ssize_t start, end;
    PyObject *mask;
} Piece;

/* Whether s[start:end] already is a mask (then it is left alone): fixed masks compared here. */
static int already_mask(Stage *sg, const uint8_t *s, PyObject *text, Py_ssize_t start, Py_ssize_t end) {
    if (sg->fixed != Py_None)
        return sg->fixed_ascii && end - start == sg->fixed_len && memcmp(s + start, sg->fixed_utf8, (size_t)sg->fixed_len) == 0;
    PyObject *secret = PyUnicode_Substring(text, start, end);
    if (secret == NULL)
        return -1;
    PyObject *r = PyObject_CallOneArg(sg->is_mask, secret);
    Py_DECREF(secret);
    if (r == NULL)
        return -1;
    int t = PyObject_IsTrue(r);
    Py_DECREF(r);
    return t;
}

/* credential_pair's validator (masker.py `Masker._pair_ok`) on the ASCII string s: the key is the run
 * of key characters before the separator at p (after blanks and an optional, possibly escaped,
 * closing quote) and must be SENSITIVE by the key rules; the value s[start:end] must not be a
 * stopword. 1, 0 or -1. */
static int pair_key_ok(Stage *sg, const uint8_t *s, Py_ssize_t p, Py_ssize_t start, Py_ssize_t end) {
    Py_ssize_t i = p;
    while (i > 0 && (s[i - 1] == ' ' || s[i - 1] == '\t'))
        i--;
    if (i > 0 && (s[i - 1] == '"' || s[i - 1] == '\'')) {
        i--;
        while (i > 0 && s[i - 1] == '\\')
            i--;
    }
    Py_ssize_t ke = i;
    while (i > 0 && (byte_class[s[i - 1]] & C_KEY))
        i--;
    if (i == ke)
        return 0;
    PyObject *key = PyUnicode_FromStringAndSize((const char *)s + i, ke - i);
    if (key == NULL)
        return -1;
    PyObject *c = PyObject_GetItem(sg->classify, key); /* secret_keys.KnownKeys: a dict lookup when known */
    Py_DECREF(key);
    if (c == NULL)
        return -1;
    long cls = PyLong_AsLong(c);
    Py_DECREF(c);
    if (cls == -1 && PyErr_Occurred())
        return -1;
    if (cls != sg->sensitive)
        return 0;
    char low[16];
    if (end - start >= (Py_ssize_t)sizeof low) /* longer than every stopword */
        return 1;
    for (Py_ssize_t k = start; k < end; k++)
        low[k - start] = (char)(s[k] >= 'A' && s[k] <= 'Z' ? s[k] + 32 : s[k]);
    PyObject *v = PyUnicode_FromStringAndSize(low, end - start);
    if (v == NULL)
        return -1;
    int stop = PySet_Contains(sg->stopwords, v);
    Py_DECREF(v);
    return stop < 0 ? -1 : !stop;
}

/* -- credential_pair's `key=value` form without the regex ----------------------------------- */

enum { PM_NONE = 0, PM_MATCH = 1, PM_DEFER = 2 };

/* Where secret_rules._PAIR_VALUE's run from i ends in the ASCII string s (i when none starts there): pair
 * characters, and backslashes that do not escape a closing quote. Greedy, and nothing follows it in the
 * pattern: the longest run is the match. */
static Py_ssize_t pair_value_end(const uint8_t *s, Py_ssize_t n, Py_ssize_t i, Run *seen) {
    if (i >= seen->lo && i < seen->hi) /* (whether a character belongs does not depend on where the run began) */
        return seen->hi;
    Py_ssize_t from = i;
    while (i < n) {
        if (byte_class[s[i]] & C_PAIR) {
            i++;
            continue;
        }
        if (s[i] != '\\')
            break;
        Py_ssize_t k = i + 1; /* _PAIR_BACKSLASH: \\(?!\\*["']) */
        while (k < n && s[k] == '\\')
            k++;
        if (k < n && (s[k] == '"' || s[k] == '\''))
            break;
        i++;
    }
    if (i > from)
        *seen = (Run){from, i, i};
    return i;
}

/* Whether s[i:] starts with the lower-case ASCII word w, in either case. */
static int word_at(const uint8_t *s, Py_ssize_t n, Py_ssize_t i, const char *w) {
    for (; *w; w++, i++)
        if (i >= n || (s[i] | 0x20) != (uint8_t)*w) /* (for a letter w, only w and its capital give w) */
            return 0;
    return 1;
}

static inline int is_blank(uint8_t c) {
    return c == ' ' || c == '\t';
}

/* Whether telegram_bot_token's `A[A-Za-z0-9_\-]{34}(?![A-Za-z0-9_\-])` matches after the colon at p (only
 * then may it match before credential_pair: deferring on less made a string of `12345:A...` pairs, each
 * value running to its end, quadratic). */
static int telegram_after(const uint8_t *s, Py_ssize_t n, Py_ssize_t p) {
    if (n - p < 36)
        return 0;
    for (Py_ssize_t k = p + 2; k < p + 36; k++)
        if (!(byte_class[s[k]] & C_TOKEN))
            return 0;
    return p + 36 == n || !(byte_class[s[p + 36]] & C_TOKEN);
}

/* What the detector regex's match at the separator s[p] (`:` or `=`) of the ASCII string s is, where its
 * branch there is credential_pair's (masker.pair_groups): PM_MATCH with the match's end and the value's span,
 * PM_NONE when the regex does not match at p, PM_DEFER when the regex must run (a detector tried before
 * credential_pair at a colon may match, or the value may be a PEM block). It is the regex on agent
 * telemetry's most frequent match (`"Authorization": "..."`, `api_key=...`), whose sre match cost about
 * 1.2 µs. The pattern (secret_rules.py; tests/unit/processors/privacy/test_pair_match.py compares the two):
 *   (?<=[A-Za-z0-9_\-\"' ][:=])[ \t]{0,3}(?:\\*[\"'])?(?!//)
 *   (?P<v>PEM|(?:(?i:bearer|basic|token)[ \t]+)?PAIR_VALUE)
 * Backtracking finds no match the greedy path misses: fewer blanks, or no quote, leave the value starting
 * at a blank, a quote or a backslash escaping a quote, none of which can start PAIR_VALUE. */
static int pair_match(const uint8_t *s, Py_ssize_t n, Py_ssize_t p, Py_ssize_t *me, Py_ssize_t *vs, Py_ssize_t *ve,
                      Run *seen /* the value run found last in this string */) {
    if (s[p] == ':') {
        if (p + 2 < n && s[p + 1] == '/' && s[p + 2] == '/')
            return PM_DEFER; /* url_password: `//` after the colon */
        if (p + 1 < n && s[p + 1] == 'A' && p >= 5 && (byte_class[s[p - 1]] & byte_class[s[p - 2]] & byte_class[s[p - 3]]
                                                        & byte_class[s[p - 4]] & byte_class[s[p - 5]] & C_DIGIT)
            && telegram_after(s, n, p))
            return PM_DEFER; /* telegram_bot_token: five digits before it, `A` and 34 token characters after it */
    }
    uint8_t b = p > 0 ? s[p - 1] : 0;
    if (p == 0 || !((byte_class[b] & C_TOKEN) || b == '"' || b == '\'' || b == ' '))
        return PM_NONE; /* (C_TOKEN: A-Za-z0-9_-) */
    Py_ssize_t i = p + 1, j;
    for (int k = 0; k < 3 && i < n && is_blank(s[i]); k++)
        i++;
    for (j = i; j < n && s[j] == '\\'; j++)
        ;
    if (j < n && (s[j] == '"' || s[j] == '\''))
        i = j + 1;
    if (i + 1 < n && s[i] == '/' && s[i + 1] == '/')
        return PM_NONE;
    if (n - i >= 10 && memcmp(s + i, "-----BEGIN", 10) == 0)
        return PM_DEFER;
    static const char *const schemes[] = {"bearer", "basic", "token"};
    for (int w = 0; w < 3; w++) {
        if (!word_at(s, n, i, schemes[w]))
            continue;
        Py_ssize_t t = i + (Py_ssize_t)strlen(schemes[w]);
        if (t < n && is_blank(s[t])) {
            while (t < n && is_blank(s[t]))
                t++;
            Py_ssize_t e = pair_value_end(s, n, t, seen);
            if (e > t) {
                *vs = i;
                *me = *ve = e;
                return PM_MATCH;
            }
        }
        break; /* (at most one of the words is there) */
    }
    Py_ssize_t e = pair_value_end(s, n, i, seen);
    if (e == i)
        return PM_NONE;
    *vs = i;
    *me = *ve = e;
    return PM_MATCH;
}

/* What the regex's match m at p says: the number of the detector group that matched (`lastindex`), where
 * the match ends, and the span to replace (the secret-part group, or the match reaching `back` before p,
 * never before `last`). 0, or -1 on error. */
static int match_facts(Stage *sg, const uint8_t *s, PyObject *m, Py_ssize_t p, Py_ssize_t last, Py_ssize_t *g,
                       Py_ssize_t *me, Py_ssize_t *start, Py_ssize_t *end) {
    PyObject *li = PyObject_GetAttr(m, s_lastindex);
    if (li == NULL)
        return -1;
    *g = PyLong_AsSsize_t(li);
    Py_DECREF(li);
    if (*g < 0 || *g >= PyTuple_GET_SIZE(sg->rules) || PyTuple_GET_ITEM(sg->rules, *g) == Py_None) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "a match without a detector rule");
        return -1;
    }
    PyObject *rule = PyTuple_GET_ITEM(sg->rules, *g); /* (name, vgroup, back, check) */
    Py_ssize_t vgroup = PyLong_AsSsize_t(PyTuple_GET_ITEM(rule, 1));
    Py_ssize_t back = PyLong_AsSsize_t(PyTuple_GET_ITEM(rule, 2));
    PyObject *e = PyObject_VectorcallMethod(s_end, &m, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (e == NULL)
        return -1;
    *me = PyLong_AsSsize_t(e);
    Py_DECREF(e);
    if (vgroup) {
        PyObject *args[3] = {NULL, m, PyTuple_GET_ITEM(rule, 1)};
        PyObject *span = PyObject_VectorcallMethod(s_span, args + 1, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        if (span == NULL)
            return -1;
        *start = PyLong_AsSsize_t(PyTuple_GET_ITEM(span, 0));
        *end = PyLong_AsSsize_t(PyTuple_GET_ITEM(span, 1));
        Py_DECREF(span);
    } else {
        *end = *me;
        *start = p;
        if (back < 0) {
            while (*start > last && (byte_class[s[*start - 1]] & C_TOKEN))
                (*start)--;
        } else {
            *start = p - back < last ? last : p - back;
        }
    }
    return PyErr_Occurred() ? -1 : 0;
}

/* The match of group g at p, replacing s[start:end]: 1 with the piece to replace filled in, 0 when it is no
 * secret after all (the caller then moves on by one), -1 on error. `m`: the regex's match, for validators
 * written in Python (NULL only for credential_pair's, which is done here). */
static int mask_decide(Stage *sg, const uint8_t *s, PyObject *text, PyObject *m, Py_ssize_t g, Py_ssize_t p,
                       Py_ssize_t start, Py_ssize_t end, Piece *pc, PyObject **name) {
    PyObject *rule = PyTuple_GET_ITEM(sg->rules, g);
    PyObject *check = PyTuple_GET_ITEM(rule, 3);
    *name = PyTuple_GET_ITEM(rule, 0);
    if (check == sg->pair_check) {
        int ok = pair_key_ok(sg, s, p, start, end);
        if (ok <= 0)
            return ok;
    } else if (check != Py_None) {
        PyObject *a[5] = {text, m, NULL, NULL, NULL};
        a[2] = PyLong_FromSsize_t(p);
        a[3] = PyLong_FromSsize_t(start);
        a[4] = PyLong_FromSsize_t(end);
        PyObject *r = a[2] && a[3] && a[4] ? PyObject_Vectorcall(check, a, 5, NULL) : NULL;
        Py_XDECREF(a[2]);
        Py_XDECREF(a[3]);
        Py_XDECREF(a[4]);
        if (r == NULL)
            return -1;
        int ok = PyObject_IsTrue(r);
        Py_DECREF(r);
        if (ok <= 0)
            return ok;
    }
    int is = already_mask(sg, s, text, start, end);
    if (is != 0)
        return is < 0 ? -1 : 0;
    if (sg->fixed != Py_None) {
        pc->mask = Py_NewRef(sg->fixed);
    } else {
        PyObject *secret = PyUnicode_Substring(text, start, end);
        pc->mask = secret == NULL ? NULL : PyObject_CallOneArg(sg->replacer, secret);
        Py_XDECREF(secret);
        if (pc->mask == NULL)
            return -1;
        if (!PyUnicode_Check(pc->mask)) {
            Py_CLEAR(pc->mask);
            PyErr_SetString(PyExc_TypeError, "a replacer must return str");
            return -1;
        }
    }
    pc->start = start;
    pc->end = end;
    return 1;
}

/* The new text of the ASCII string `text` (n characters) with its pieces replaced by their masks. */
static PyObject *join_pieces(PyObject *text, Py_ssize_t n, Piece *pcs, Py_ssize_t np) {
    Py_UCS4 maxchar = 127;
    Py_ssize_t total = n;
    for (Py_ssize_t k = 0; k < np; k++) {
        Py_UCS4 mc = PyUnicode_MAX_CHAR_VALUE(pcs[k].mask);
        if (mc > maxchar)
            maxchar = mc;
        total += PyUnicode_GET_LENGTH(pcs[k].mask) - (pcs[k].end - pcs[k].start);
    }
    PyObject *res = PyUnicode_New(total, maxchar);
    if (res == NULL)
        return NULL;
    Py_ssize_t last = 0, to = 0;
    for (Py_ssize_t k = 0; k < np; k++) {
        Py_ssize_t ml = PyUnicode_GET_LENGTH(pcs[k].mask);
        if (PyUnicode_CopyCharacters(res, to, text, last, pcs[k].start - last) < 0 ||
            PyUnicode_CopyCharacters(res, to + pcs[k].start - last, pcs[k].mask, 0, ml) < 0) {
            Py_DECREF(res);
            return NULL;
        }
        to += pcs[k].start - last + ml;
        last = pcs[k].end;
    }
    if (PyUnicode_CopyCharacters(res, to, text, last, n - last) < 0) {
        Py_DECREF(res);
        return NULL;
    }
    return res;
}

/* The mask stage's rules on the string [cs, ce) holding offsets (`text` its str): a new reference to
 * the new text (`text` itself when nothing changed). */
static PyObject *mask_string(St *st, Stage *sg, PyObject *text, Py_ssize_t cs, Py_ssize_t ce) {
    Py_ssize_t n = ce - cs;
    if (!PyUnicode_IS_ASCII(text)) /* byte offsets are not character offsets */
        return PyObject_CallOneArg(sg->full_fn, text);
    has_off(st, cs, ce); /* the cursor at the string's first offset */
    Py_ssize_t room = st->noffs - st->ci, np_ = 0;
    Py_ssize_t stackpos[32];
    Piece stackpc[8];
    Py_ssize_t *pos = room <= 32 ? stackpos : PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)room);
    Piece *pcs = stackpc;
    Py_ssize_t cap = 8;
    PyObject *res = NULL;
    if (pos == NULL)
        return PyErr_NoMemory();
    Py_ssize_t npos = mask_positions(st, sg, cs, ce, pos);
    if (npos < 0) {
        res = PyObject_CallOneArg(sg->full_fn, text);
        goto done;
    }
    const uint8_t *s = st->buf + cs;
    Py_ssize_t last = 0, next = 0;
    Run values = {0, 0, 0};
    for (Py_ssize_t k = 0; k < npos; k++) {
        Py_ssize_t p = pos[k];
        if (p < next)
            continue;
        if (p >= n)
            break;
        Py_ssize_t g = s[p] == ':' ? sg->pair_colon : s[p] == '=' ? sg->pair_eq : 0, me = 0, start = 0, end = 0;
        PyObject *m = NULL;
        int found = g ? pair_match(s, n, p, &me, &start, &end, &values) : PM_DEFER;
        if (found == PM_NONE)
            continue;
        if (found == PM_DEFER) {
            PyObject *pp = PyLong_FromSsize_t(p);
            if (pp == NULL)
                goto done;
            PyObject *args[2] = {text, pp};
            m = PyObject_Vectorcall(sg->match, args, 2, NULL);
            Py_DECREF(pp);
            if (m == NULL)
                goto done;
            if (m == Py_None) {
                Py_DECREF(m);
                continue;
            }
            if (match_facts(sg, s, m, p, last, &g, &me, &start, &end) < 0) {
                Py_DECREF(m);
                goto done;
            }
        }
        if (np_ == cap) {
            Piece *bigger = PyMem_Malloc(sizeof(Piece) * (size_t)(cap * 2));
            if (bigger == NULL) {
                Py_XDECREF(m);
                PyErr_NoMemory();
                goto done;
            }
            memcpy(bigger, pcs, sizeof(Piece) * (size_t)np_);
            if (pcs != stackpc)
                PyMem_Free(pcs);
            pcs = bigger;
            cap *= 2;
        }
        PyObject *name = NULL;
        int r = mask_decide(sg, s, text, m, g, p, start, end, &pcs[np_], &name);
        if (r > 0 && count_detector(sg->counts, name) < 0) {
            Py_DECREF(pcs[np_].mask);
            r = -1;
        }
        Py_XDECREF(m);
        if (r < 0)
            goto done;
        if (r == 0) {
            next = p + 1;
            continue;
        }
        last = pcs[np_].end;
        next = me > p ? me : p + 1;
        np_++;
    }
    res = np_ ? join_pieces(text, n, pcs, np_) : Py_NewRef(text);
done:
    for (Py_ssize_t k = 0; k < np_; k++)
        Py_DECREF(pcs[k].mask);
    if (pcs != stackpc)
        PyMem_Free(pcs);
    if (pos != stackpos)
        PyMem_Free(pos);
    return res;
}

/* -- strings through the stages -------------------------------------------------------------- */

static int same_text(PyObject *a, PyObject *b) {
    return a == b || PyUnicode_Compare(a, b) == 0;
}

/* -- uuid_normalize's UUID template ------------------------------------------------------------ */

static int is_alnum(uint8_t c) {
    int low = c | 0x20;
    return (c >= '0' && c <= '9') || (low >= 'a' && low <= 'z');
}

/* An 8-4-4-4-12 hex core at q. */
static int uuid_core(const uint8_t *b, Py_ssize_t n, Py_ssize_t q) {
    return q >= 0 && n - q >= 36 && hex4(b + q) && hex4(b + q + 4) && b[q + 8] == '-' && hex4(b + q + 9) &&
           b[q + 13] == '-' && hex4(b + q + 14) && b[q + 18] == '-' && hex4(b + q + 19) && b[q + 23] == '-' &&
           hex4(b + q + 24) && hex4(b + q + 28) && hex4(b + q + 32);
}

/* `end` if no letter or digit follows there (the pattern's look-ahead), else -1. */
static Py_ssize_t uuid_end(const uint8_t *b, Py_ssize_t n, Py_ssize_t end) {
    return end == n || !is_alnum(b[end]) ? end : -1;
}

/* uuid_normalize.UUID_PATTERN matched at p on ASCII text: the match's end, or -1. Its alternatives in
 * order (the first that matches wins, as in `re`): urn:uuid: (any case) then {core} or core; {core}; core. */
static Py_ssize_t uuid_match(const uint8_t *b, Py_ssize_t n, Py_ssize_t p) {
    if (p > 0 && is_alnum(b[p - 1]))
        return -1;
    static const char urn[] = "urn:uuid:";
    Py_ssize_t e;
    if (n - p >= 9) {
        int ok = 1;
        for (int i = 0; i < 9 && ok; i++)
            ok = (urn[i] == ':' ? b[p + i] : (b[p + i] | 0x20)) == (uint8_t)urn[i];
        if (ok) {
            Py_ssize_t q = p + 9;
            if (q < n && b[q] == '{' && uuid_core(b, n, q + 1) && q + 37 < n && b[q + 37] == '}' &&
                (e = uuid_end(b, n, q + 38)) >= 0)
                return e;
            if (uuid_core(b, n, q) && (e = uuid_end(b, n, q + 36)) >= 0)
                return e;
        }
    }
    if (b[p] == '{' && uuid_core(b, n, p + 1) && p + 37 < n && b[p + 37] == '}' && (e = uuid_end(b, n, p + 38)) >= 0)
        return e;
    if (uuid_core(b, n, p) && (e = uuid_end(b, n, p + 36)) >= 0)
        return e;
    return -1;
}

/* uuid_normalize's _NUM_SEGMENT (`/[0-9]+(?=[/?#;]|$|\s)`) somewhere in ASCII text (`\s` of a str
 * pattern: ASCII blanks and \x1c-\x1f). */
static int numeric_segment(const uint8_t *b, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i + 1 < n; i++) {
        if (b[i] != '/' || !(byte_class[b[i + 1]] & C_DIGIT))
            continue;
        Py_ssize_t j = i + 1;
        while (j < n && (byte_class[b[j]] & C_DIGIT))
            j++;
        if (j == n)
            return 1;
        uint8_t c = b[j];
        if (c == '/' || c == '?' || c == '#' || c == ';' || c == ' ' || (c >= '\t' && c <= '\r') ||
            (c >= 0x1c && c <= 0x1f))
            return 1;
        i = j - 1;
    }
    return 0;
}

/* Normalizer.normalize_found on ASCII text whose anchors `found` allow the UUID template (no hex or
 * ULID anchor, no numeric segment): every UUID replaced by the replacement, counted under "uuid". A new
 * reference: `cur` itself when nothing matched; NULL with an exception set on error, or NULL without
 * one (`*declined`) when the case is not for this path. */
static PyObject *uuid_template(Stage *sg, PyObject *cur, const uint8_t *b, Py_ssize_t n, int found, int *declined) {
    *declined = 1;
    if (found & (PF_HEX | PF_ULID) || !PyUnicode_IS_ASCII(cur))
        return NULL;
    if (found & PF_NUM && numeric_segment(b, n))
        return NULL;
    *declined = 0;
    Py_ssize_t count = 0, last = 0, olen = 0, cap = 0;
    char *out = NULL;
    for (Py_ssize_t p = 0; p < n;) {
        uint8_t c = b[p];
        Py_ssize_t e = (byte_class[c] & C_HEX) || c == '{' || (c | 0x20) == 'u' ? uuid_match(b, n, p) : -1;
        if (e < 0) {
            p++;
            continue;
        }
        Py_ssize_t need = olen + (p - last) + sg->uuid_repl_len + (n - e);
        if (need > cap) {
            cap = need * 2;
            char *grown = PyMem_Realloc(out, (size_t)cap);
            if (grown == NULL) {
                PyMem_Free(out);
                PyErr_NoMemory();
                return NULL;
            }
            out = grown;
        }
        memcpy(out + olen, b + last, (size_t)(p - last));
        olen += p - last;
        memcpy(out + olen, sg->uuid_repl, (size_t)sg->uuid_repl_len);
        olen += sg->uuid_repl_len;
        last = p = e;
        count++;
    }
    if (count == 0)
        return Py_NewRef(cur);
    memcpy(out + olen, b + last, (size_t)(n - last));
    olen += n - last;
    PyObject *r = PyUnicode_DecodeUTF8(out, olen, NULL);
    PyMem_Free(out);
    if (r == NULL)
        return NULL;
    static PyObject *s_uuid;
    if (s_uuid == NULL && (s_uuid = PyUnicode_InternFromString("uuid")) == NULL)
        goto error;
    PyObject *old = PyDict_GetItemWithError(sg->uuid_counts, s_uuid);
    if (old == NULL && PyErr_Occurred())
        goto error;
    long had = old == NULL ? 0 : PyLong_AsLong(old);
    if (had == -1 && PyErr_Occurred())
        goto error;
    PyObject *v = PyLong_FromSsize_t(had + count);
    if (v == NULL)
        goto error;
    int rc = PyDict_SetItem(sg->uuid_counts, s_uuid, v);
    Py_DECREF(v);
    if (rc < 0)
        goto error;
    return r;
error:
    Py_DECREF(r);
    return NULL;
}

/* One stage's text rule on a string; `cur` is its text so far (a new reference is returned), `changed`
 * whether an earlier stage changed it. */
static PyObject *stage_text(St *st, int k, PyObject *cur, int changed, Py_ssize_t cs, Py_ssize_t ce) {
    Stage *sg = &st->stage[k];
    if (sg->mode == MODE_MASK) {
        if (sg->match == Py_None) /* no value detector: nothing to do with text */
            return Py_NewRef(cur);
        if (changed)
            return PyObject_CallOneArg(sg->full_fn, cur);
        return mask_string(st, sg, cur, cs, ce);
    }
    int found = 0;
    if (sg->prefilter) {
        const uint8_t *b = st->buf + cs;
        Py_ssize_t n = ce - cs;
        if (changed) {
            b = (const uint8_t *)PyUnicode_AsUTF8AndSize(cur, &n);
            if (b == NULL)
                return NULL;
            found = prefilter_flags(sg->prefilter, b, 0, n);
        } else {
            found = st->pf_at == cs ? st->pf_found[k] : prefilter_flags(sg->prefilter, b, 0, n);
        }
        if (!found)
            return Py_NewRef(cur);
        if (sg->uuid_repl != NULL) {
            int declined;
            PyObject *r = uuid_template(sg, cur, b, n, found, &declined);
            if (r != NULL || !declined)
                return r;
        }
    }
    PyObject *a = PyLong_FromLong(found);
    if (a == NULL)
        return NULL;
    PyObject *args[2] = {cur, a};
    PyObject *r = PyObject_Vectorcall(sg->text_fn, args, 2, NULL);
    Py_DECREF(a);
    if (r != NULL && !PyUnicode_Check(r)) {
        Py_DECREF(r);
        PyErr_SetString(PyExc_TypeError, "a string rule must return str");
        return NULL;
    }
    return r;
}

/* Write `result` in place of [f, ce) (tag bytes `head`) if it differs from the input's text. */
static int write_result(St *st, PyObject *result, Py_ssize_t f, Py_ssize_t ce, const uint8_t *head, Py_ssize_t hlen) {
    Py_ssize_t n;
    const char *p = PyUnicode_AsUTF8AndSize(result, &n);
    return p == NULL ? -1 : put(st, f, ce, head, hlen, p, n);
}

/* Whether a string leaf under actions `act` is looked at by some stage: a text stage, the mask
 * stage where an offset lies in it, or a stage taking it whole. */
static int leaf_wanted(St *st, const int *act, Py_ssize_t cs, Py_ssize_t ce) {
    for (int k = 0; k < st->nstages; k++) {
        if (act[k] == A_WHOLE)
            return 1;
        if (act[k] != A_TEXT)
            continue;
        if (st->stage[k].mode == MODE_TEXT) {
            /* a text stage with a prefilter looks at the string only if it holds an id anchor (or an
             * earlier stage changed it, which takes an earlier stage looking at it); stage_text reuses
             * what was found */
            if (!st->stage[k].prefilter)
                return 1;
            if (st->pf_at != cs) {
                for (int j = 0; j < st->nstages; j++)
                    st->pf_found[j] = st->stage[j].mode == MODE_TEXT && st->stage[j].prefilter
                                          ? prefilter_flags(st->stage[j].prefilter, st->buf, cs, ce) : 0;
                st->pf_at = cs;
            }
            if (st->pf_found[k])
                return 1;
        } else if (has_off(st, cs, ce)) {
            return 1;
        }
    }
    return 0;
}

/* A string [cs, ce) (field start f, tag bytes `head`) through every stage in order, by `act`. */
static int string_leaf(St *st, const int *act, Py_ssize_t f, Py_ssize_t cs, Py_ssize_t ce, const uint8_t *head,
                       Py_ssize_t hlen) {
    if (!leaf_wanted(st, act, cs, ce))
        return 0;
    PyObject *orig = decode(st, cs, ce);
    if (orig == NULL)
        return -1;
    PyObject *cur = Py_NewRef(orig);
    int changed = 0;
    for (int k = 0; k < st->nstages; k++) {
        PyObject *next;
        if (act[k] == A_WHOLE) {
            next = st->stage[k].whole_fn == Py_None ? Py_NewRef(cur) : PyObject_CallOneArg(st->stage[k].whole_fn, cur);
        } else if (act[k] == A_TEXT && (changed || st->stage[k].mode == MODE_TEXT || has_off(st, cs, ce))) {
            next = stage_text(st, k, cur, changed, cs, ce);
        } else {
            continue;
        }
        if (next == NULL)
            goto error;
        if (!PyUnicode_Check(next)) {
            Py_DECREF(next);
            PyErr_SetString(PyExc_TypeError, "a string rule must return str");
            goto error;
        }
        if (!same_text(next, cur)) {
            changed = 1;
            count_change(st, k);
        }
        Py_SETREF(cur, next);
    }
    int rc = changed && !same_text(cur, orig) ? write_result(st, cur, f, ce, head, hlen) : 0;
    Py_DECREF(cur);
    Py_DECREF(orig);
    return rc;
error:
    Py_DECREF(cur);
    Py_DECREF(orig);
    return -1;
}

/* A bytes leaf [cs, ce) of an AnyValue (field start f): a stage taking it whole turns it into the
 * string whole_fn(hex) (always written, even if the rule returns the hex); the stages after it
 * see that string. Stages before see nothing (there is no text in bytes). */
static int bytes_leaf(St *st, const int *act, Py_ssize_t f, Py_ssize_t cs, Py_ssize_t ce) {
    static const uint8_t head[1] = {TAG_STRING};
    int k = 0;
    while (k < st->nstages && act[k] != A_WHOLE)
        k++;
    if (k == st->nstages)
        return 0;
    static const char digits[] = "0123456789abcdef";
    PyObject *cur = PyUnicode_New((ce - cs) * 2, 127);
    if (cur == NULL)
        return -1;
    Py_UCS1 *p = PyUnicode_1BYTE_DATA(cur);
    for (Py_ssize_t i = cs; i < ce; i++) {
        *p++ = (Py_UCS1)digits[st->buf[i] >> 4];
        *p++ = (Py_UCS1)digits[st->buf[i] & 15];
    }
    for (int first = k; k < st->nstages; k++) {
        PyObject *next;
        if (act[k] == A_WHOLE)
            next = st->stage[k].whole_fn == Py_None ? Py_NewRef(cur) : PyObject_CallOneArg(st->stage[k].whole_fn, cur);
        else if (act[k] == A_TEXT)
            next = stage_text(st, k, cur, 1, cs, ce);
        else
            continue;
        if (next == NULL || !PyUnicode_Check(next)) {
            if (next != NULL)
                PyErr_SetString(PyExc_TypeError, "a string rule must return str");
            Py_XDECREF(next);
            Py_DECREF(cur);
            return -1;
        }
        if (k == first || !same_text(next, cur))
            count_change(st, k);
        Py_SETREF(cur, next);
    }
    int rc = write_result(st, cur, f, ce, head, 1);
    Py_DECREF(cur);
    return rc;
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
    PyObject *r = PyDict_Check(rule) ? Py_XNewRef(PyDict_GetItemWithError(rule, key)) : NULL;
    if (r == NULL && !PyErr_Occurred())
        r = PyObject_GetItem(rule, key); /* __missing__ classifies and remembers */
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

static int any_value(St *st, Py_ssize_t s, Py_ssize_t e, const Ctx *cx);

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

/* Name/value pairs in maps (walker.NAME_KEYS / VALUE_KEYS, the same exact keys). */
static int key_in(const uint8_t *k, Py_ssize_t n, const char *const *set) {
    for (; *set != NULL; set++)
        if ((Py_ssize_t)strlen(*set) == n && memcmp(*set, k, (size_t)n) == 0)
            return 1;
    return 0;
}
static const char *const NAME_KEYS[] = {"name", "Name", "NAME", "key", "Key", "KEY", NULL};
static const char *const VALUE_KEYS[] = {"value", "Value", "VALUE", NULL};

/* A KeyValue: [lp, s) its length prefix, [s, e) its content; `rules[k]` the key rule of stage k and
 * `nested[k]` its rule for maps inside the value; `inherit` the actions of stages that take the
 * whole value without looking at keys (a value inside a WHOLE value, or a map entry of a stage whose
 * rule is None), A_SKIP for stages that classify the key. */
static int kv(St *st, Py_ssize_t lp, Py_ssize_t s, Py_ssize_t e, PyObject *const *rules, PyObject *const *nested,
              const int *inherit, const int *named) {
    Py_ssize_t ks, ke, vlp = 0, vcs, vce = 0;
    if (kv_parts(st, s, e, &ks, &ke, &vlp, &vcs, &vce) < 0)
        return -1;
    if (vcs < 0)
        return 0;
    Ctx cx;
    int any = 0;
    for (int k = 0; k < st->nstages; k++) {
        cx.act[k] = A_SKIP;
        cx.nested[k] = nested[k];
        cx.named[k] = 0;
        if (inherit[k] != A_SKIP) {
            cx.act[k] = inherit[k];
        } else if (rules[k] != NULL) {
            int forced = named[k] && ks >= 0 && key_in(st->buf + ks, ke - ks, VALUE_KEYS);
            /* is there anything for this stage here (before classifying the key)? */
            if (!forced && !(st->stage[k].mode == MODE_TEXT || (st->mask_stage == k && has_off(st, s, e))))
                continue;
            int action = classify(st, rules[k], ks, ke);
            if (action < 0)
                return -1;
            if (forced && action == A_TEXT)
                action = A_WHOLE;
            if (action == A_TEXT && st->stage[k].mode == MODE_MASK && !has_off(st, vcs, vce))
                action = A_SKIP;
            cx.act[k] = action;
        }
        any |= cx.act[k] != A_SKIP;
    }
    if (!any)
        return 0;
    if (push(st, lp, s, e, 0) < 0 || push(st, vlp, vcs, vce, 0) < 0 || any_value(st, vcs, vce, &cx) < 0)
        return -1;
    return pop(st) < 0 || pop(st) < 0 ? -1 : 0;
}

/* Whether the map [s, e) holds a name/value pair that names a credential under `rule` (a mapping):
 * its KeyValues in order, until one keyed as in NAME_KEYS holds a string `rule` calls WHOLE. */
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

/* The elements of an array or map value (`tag` says which; [lp, cs) its length prefix, [cs, ce) its
 * content) under `cx`: each AnyValue of an array, each KeyValue of a map, those some stage wants. */
static int any_elements(St *st, uint64_t tag, Py_ssize_t lp, Py_ssize_t cs, Py_ssize_t ce, const Ctx *cx) {
    if (push(st, lp, cs, ce, 0) < 0)
        return -1;
    int named[MAX_STAGES] = {0}, inherit[MAX_STAGES];
    PyObject *rules[MAX_STAGES];
    int whole_or_text = 0; /* stages that visit every element (whole, a text stage, a named map) */
    for (int k = 0; k < st->nstages; k++) {
        inherit[k] = A_SKIP;
        rules[k] = NULL;
        if (cx->act[k] == A_SKIP)
            continue;
        if (tag == TAG_KVLIST && cx->act[k] == A_TEXT && cx->nested[k] != Py_None) {
            rules[k] = cx->nested[k]; /* a map's keys are classified by the nested rule */
            if (!PyTuple_CheckExact(cx->nested[k])) {
                named[k] = names_whole(st, cs, ce, cx->nested[k]);
                if (named[k] < 0)
                    return -1;
            }
        } else {
            inherit[k] = cx->act[k];
        }
        if (cx->act[k] == A_WHOLE || st->stage[k].mode == MODE_TEXT || named[k])
            whole_or_text = 1;
    }
    Py_ssize_t i = cs;
    while (i < ce) {
        Py_ssize_t elp = 0, ecs = 0, ece = 0;
        uint64_t etag;
        int ld = next_field(st, &i, ce, &etag, &elp, &ecs, &ece);
        if (ld < 0)
            return -1;
        if (!ld || etag != TAG_STRING || (!whole_or_text && !has_off(st, ecs, ece)))
            continue;
        if (tag == TAG_KVLIST) {
            if (kv(st, elp, ecs, ece, rules, cx->nested, inherit, named) < 0)
                return -1;
            continue;
        }
        if (push(st, elp, ecs, ece, 0) < 0 || any_value(st, ecs, ece, cx) < 0 || pop(st) < 0)
            return -1;
    }
    return pop(st);
}

static int any_value(St *st, Py_ssize_t s, Py_ssize_t e, const Ctx *cx) {
    static const uint8_t head[1] = {TAG_STRING};
    uint64_t tag = 0;
    Py_ssize_t f = 0, lp = 0, cs = 0, ce = 0;
    int r = any_field(st, s, e, &tag, &f, &lp, &cs, &ce);
    if (r <= 0)
        return r;
    if (tag == TAG_STRING)
        return string_leaf(st, cx->act, f, cs, ce, head, 1);
    if (tag == TAG_BYTES)
        return bytes_leaf(st, cx->act, f, cs, ce);
    if (tag != TAG_ARRAY && tag != TAG_KVLIST)
        return 0;
    return any_elements(st, tag, lp, cs, ce, cx);
}

static const Step *find_step(const Node *nd, uint64_t tag) {
    for (Py_ssize_t k = 0; k < nd->n; k++)
        if (nd->steps[k].tag == tag)
            return &nd->steps[k];
    return NULL;
}

static int walk_msg(St *st, Py_ssize_t s, Py_ssize_t e, Py_ssize_t node);

/* A planned field [f, ce) of a message: what each stage's leaf there says. */
static int walk_leaf(St *st, const Step *sp, Py_ssize_t f, Py_ssize_t lp, Py_ssize_t cs, Py_ssize_t ce) {
    int act[MAX_STAGES];
    for (int k = 0; k < st->nstages; k++)
        act[k] = sp->present >> k & 1 ? A_TEXT : A_SKIP;
    switch (sp->kind) {
    case K_MSG:
        if (push(st, lp, cs, ce, sp->owner) < 0 || walk_msg(st, cs, ce, sp->sub) < 0)
            return -1;
        return pop(st);
    case K_STR:
        return string_leaf(st, act, f, cs, ce, st->buf + f, lp - f);
    case K_ATTRS: {
        PyObject *rules[MAX_STAGES], *nested[MAX_STAGES];
        int inherit[MAX_STAGES] = {0}, named[MAX_STAGES] = {0};
        for (int k = 0; k < st->nstages; k++) {
            rules[k] = sp->present >> k & 1 ? sp->leaf[k].rule : NULL;
            nested[k] = sp->leaf[k].nested;
        }
        return kv(st, lp, cs, ce, rules, nested, inherit, named);
    }
    default: { /* K_ANY */
        Ctx cx;
        for (int k = 0; k < st->nstages; k++) {
            cx.act[k] = act[k];
            cx.nested[k] = sp->leaf[k].nested;
            cx.named[k] = 0;
        }
        if (push(st, lp, cs, ce, 0) < 0 || any_value(st, cs, ce, &cx) < 0)
            return -1;
        return pop(st);
    }
    }
}

static int walk_msg(St *st, Py_ssize_t s, Py_ssize_t e, Py_ssize_t node) {
    const Node *nd = &st->w->nodes[node];
    int everything = nd->reach & st->text_stages; /* a text stage looks at every string below */
    Py_ssize_t i = s;
    while (i < e) {
        if (!everything && !has_off(st, i, e))
            return 0; /* nothing more to find in this message */
        Py_ssize_t f = i, lp = 0, cs = 0, ce = 0;
        uint64_t tag;
        int ld = next_field(st, &i, e, &tag, &lp, &cs, &ce);
        if (ld < 0)
            return -1;
        if (!ld)
            continue;
        const Step *sp = find_step(nd, tag);
        if (sp == NULL)
            continue;
        int reach = sp->kind == K_MSG ? st->w->nodes[sp->sub].reach : sp->present;
        if (!worth(st, reach, cs, ce))
            continue;
        if (walk_leaf(st, sp, f, lp, cs, ce) < 0)
            return -1;
    }
    return 0;
}

/* -- the Walker type ------------------------------------------------------------------------- */

static void walker_free_nodes(Walker *w) {
    if (w->nodes != NULL) {
        for (Py_ssize_t k = 0; k < w->nnodes; k++)
            PyMem_Free(w->nodes[k].steps);
        PyMem_Free(w->nodes);
        w->nodes = NULL;
    }
    Py_CLEAR(w->plan);
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

static int init_step(Walker *self, Step *sp, PyObject *spec, Py_ssize_t nn) {
    unsigned long long tag;
    int kind, owner;
    PyObject *leaves;
    if (!PyArg_ParseTuple(spec, "KinpO!;a step is (tag, kind, sub, owner, leaves)", &tag, &kind, &sp->sub, &owner,
                          &PyTuple_Type, &leaves))
        return -1;
    if (kind < K_MSG || kind > K_ANY || (kind == K_MSG && (sp->sub < 0 || sp->sub >= nn)) ||
        PyTuple_GET_SIZE(leaves) != self->nstages) {
        PyErr_SetString(PyExc_ValueError, "a step's kind, sub-message or leaves are out of range");
        return -1;
    }
    sp->tag = tag;
    sp->kind = kind;
    sp->owner = owner;
    sp->present = 0;
    for (int k = 0; k < self->nstages; k++) {
        PyObject *leaf = PyTuple_GET_ITEM(leaves, k);
        sp->leaf[k].rule = sp->leaf[k].nested = Py_None;
        if (leaf == Py_None)
            continue;
        if (!PyTuple_CheckExact(leaf) || PyTuple_GET_SIZE(leaf) != 2) {
            PyErr_SetString(PyExc_TypeError, "a leaf is None or (rule, nested)");
            return -1;
        }
        sp->leaf[k].rule = PyTuple_GET_ITEM(leaf, 0);
        sp->leaf[k].nested = PyTuple_GET_ITEM(leaf, 1);
        if (check_rule(sp->leaf[k].rule) < 0 || check_rule(sp->leaf[k].nested) < 0)
            return -1;
        sp->present |= 1 << k;
    }
    return 0;
}

static int walker_init(Walker *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"nodes", "nstages", "fallback", NULL};
    PyObject *nodes, *fallback;
    int nstages;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!iO", kwlist, &PyList_Type, &nodes, &nstages, &fallback))
        return -1;
    if (!PyExceptionClass_Check(fallback) || nstages < 1 || nstages > MAX_STAGES) {
        PyErr_SetString(PyExc_TypeError, "fallback must be an exception class, nstages 1 to 4");
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
    self->nstages = nstages;
    self->plan = Py_NewRef(nodes);
    for (Py_ssize_t k = 0; k < nn; k++) {
        PyObject *steps;
        int reach;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(nodes, k), "iO!;a node is (reach, steps)", &reach, &PyList_Type, &steps))
            return -1;
        Py_ssize_t ns = PyList_GET_SIZE(steps);
        self->nodes[k].steps = PyMem_Calloc((size_t)(ns ? ns : 1), sizeof(Step));
        if (self->nodes[k].steps == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->nodes[k].n = ns;
        self->nodes[k].reach = reach;
        for (Py_ssize_t j = 0; j < ns; j++)
            if (init_step(self, &self->nodes[k].steps[j], PyList_GET_ITEM(steps, j), nn) < 0)
                return -1;
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
    Py_VISIT(self->plan);
    return 0;
}

static int walker_clear(Walker *self) {
    if (!self->busy)
        walker_free_nodes(self);
    Py_CLEAR(self->fallback);
    return 0;
}

/* A stage's work for this request, from its tuple (see the module comment). */
static int init_stage(St *st, int k, PyObject *spec) {
    Stage *sg = &st->stage[k];
    memset(sg, 0, sizeof *sg);
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) < 4) {
        PyErr_SetString(PyExc_TypeError, "a stage is (MODE_MASK, engine, whole_fn, owners) or "
                                         "(MODE_TEXT, prefilter, text_fn, whole_fn, owners, uuid)");
        return -1;
    }
    sg->mode = (int)PyLong_AsLong(PyTuple_GET_ITEM(spec, 0));
    if (sg->mode == MODE_TEXT && PyTuple_GET_SIZE(spec) == 6) {
        sg->prefilter = (int)PyLong_AsLong(PyTuple_GET_ITEM(spec, 1));
        sg->text_fn = PyTuple_GET_ITEM(spec, 2);
        sg->whole_fn = PyTuple_GET_ITEM(spec, 3);
        sg->owners = PyTuple_GET_ITEM(spec, 4);
        PyObject *fast = PyTuple_GET_ITEM(spec, 5);
        if (fast != Py_None) {
            PyObject *repl;
            if (!PyArg_ParseTuple(fast, "UO!;uuid = (replacement, counts)", &repl, &PyDict_Type, &sg->uuid_counts))
                return -1;
            sg->uuid_repl = PyUnicode_AsUTF8AndSize(repl, &sg->uuid_repl_len);
            if (sg->uuid_repl == NULL)
                return -1;
        }
        st->text_stages |= 1 << k;
        return PyErr_Occurred() ? -1 : 0;
    }
    if (sg->mode != MODE_MASK || PyTuple_GET_SIZE(spec) != 4 || st->mask_stage >= 0) {
        PyErr_SetString(PyExc_ValueError, "a stage's mode is MODE_MASK (at most one) or MODE_TEXT");
        return -1;
    }
    st->mask_stage = k;
    sg->whole_fn = PyTuple_GET_ITEM(spec, 2);
    sg->owners = PyTuple_GET_ITEM(spec, 3);
    PyObject *engine = PyTuple_GET_ITEM(spec, 1);
    sg->match = Py_None;
    if (engine == Py_None)
        return 0;
    PyObject *info;
    if (!PyArg_ParseTuple(engine, "OO!O!OOOOO!OOO!l(nn);engine = (match, rules, info, full_fn, fixed, replacer, "
                          "is_mask, counts, pair_check, known_keys, stopwords, sensitive, (pair_colon, pair_eq))",
                          &sg->match, &PyTuple_Type, &sg->rules, &PyTuple_Type, &info, &sg->full_fn, &sg->fixed,
                          &sg->replacer, &sg->is_mask, &PyDict_Type, &sg->counts, &sg->pair_check, &sg->classify,
                          &PyFrozenSet_Type, &sg->stopwords, &sg->sensitive, &sg->pair_colon, &sg->pair_eq))
        return -1;
    for (int i = 0; i < 2; i++) { /* a pair group is credential_pair's rule, with its validator done here */
        Py_ssize_t g = i ? sg->pair_eq : sg->pair_colon;
        PyObject *rule = g > 0 && g < PyTuple_GET_SIZE(sg->rules) ? PyTuple_GET_ITEM(sg->rules, g) : NULL;
        if (g != 0 && (rule == NULL || !PyTuple_Check(rule) || PyTuple_GET_SIZE(rule) != 4
                       || PyTuple_GET_ITEM(rule, 3) != sg->pair_check)) {
            PyErr_SetString(PyExc_ValueError, "a pair group is a credential_pair rule");
            return -1;
        }
    }
    sg->ninfo = PyTuple_GET_SIZE(info);
    sg->info = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(sg->ninfo ? sg->ninfo : 1));
    if (sg->info == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t a = 0; a < sg->ninfo; a++) {
        sg->info[a] = PyLong_AsSsize_t(PyTuple_GET_ITEM(info, a));
        if (PyErr_Occurred())
            return -1;
    }
    if (sg->fixed != Py_None) {
        if (!PyUnicode_Check(sg->fixed)) {
            PyErr_SetString(PyExc_TypeError, "the fixed mask is a str");
            return -1;
        }
        sg->fixed_utf8 = PyUnicode_AsUTF8AndSize(sg->fixed, &sg->fixed_len);
        if (sg->fixed_utf8 == NULL)
            return -1;
        sg->fixed_ascii = PyUnicode_IS_ASCII(sg->fixed);
    }
    return 0;
}

/* The anchor offsets and their anchor indexes (same length, offsets sorted). */
static int init_offsets(St *st, PyObject *offsets, PyObject *ids) {
    PyObject *fo = PySequence_Fast(offsets, "offsets must be a sequence of ints");
    PyObject *fi = fo == NULL ? NULL : PySequence_Fast(ids, "ids must be a sequence of ints");
    int rc = -1;
    if (fi == NULL)
        goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fo);
    if (PySequence_Fast_GET_SIZE(fi) != n) {
        PyErr_SetString(PyExc_ValueError, "one anchor index per offset");
        goto done;
    }
    st->offs = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n ? n : 1));
    st->ids = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n ? n : 1));
    if (st->offs == NULL || st->ids == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    st->noffs = n;
    PyObject **oi = PySequence_Fast_ITEMS(fo), **ii = PySequence_Fast_ITEMS(fi);
    for (Py_ssize_t k = 0; k < n; k++) {
        st->offs[k] = PyLong_AsSsize_t(oi[k]);
        st->ids[k] = PyLong_AsSsize_t(ii[k]);
        if (PyErr_Occurred())
            goto done;
        if (k && st->offs[k] < st->offs[k - 1]) {
            PyErr_SetString(PyExc_ValueError, "offsets must be sorted");
            goto done;
        }
    }
    rc = 0;
done:
    Py_XDECREF(fo);
    Py_XDECREF(fi);
    return rc;
}

static PyObject *walker_rewrite(Walker *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"raw", "stages", "offsets", "ids", NULL};
    Py_buffer raw;
    PyObject *stages, *offsets = Py_None, *ids = Py_None, *res = NULL;
    if (self->nodes == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Walker not initialised");
        return NULL;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*O!|OO", kwlist, &raw, &PyTuple_Type, &stages, &offsets, &ids))
        return NULL;
    St *st = PyMem_Calloc(1, sizeof(St));
    if (st == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    st->w = self;
    st->buf = raw.buf;
    st->len = raw.len;
    st->mask_stage = -1;
    st->pf_at = -1;
    st->nstages = self->nstages;
    if (PyTuple_GET_SIZE(stages) != self->nstages) {
        PyErr_SetString(PyExc_ValueError, "one stage per stage of the plan");
        goto done;
    }
    for (int k = 0; k < self->nstages; k++)
        if (init_stage(st, k, PyTuple_GET_ITEM(stages, k)) < 0)
            goto done;
    if ((offsets == Py_None) != (st->mask_stage < 0)) {
        PyErr_SetString(PyExc_ValueError, "offsets come with a MODE_MASK stage, and only then");
        goto done;
    }
    if (offsets != Py_None && init_offsets(st, offsets, ids) < 0)
        goto done;
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
        for (int k = 0; k < MAX_STAGES; k++)
            PyMem_Free(st->stage[k].info);
        PyMem_Free(st->offs);
        PyMem_Free(st->ids);
        Py_XDECREF(st->res);
        PyMem_Free(st);
    }
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

static PyObject *py_pair_match(PyObject *mod, PyObject *args) {
    Py_buffer b;
    Py_ssize_t p, me = 0, vs = 0, ve = 0;
    if (!PyArg_ParseTuple(args, "y*n", &b, &p))
        return NULL;
    for (Py_ssize_t i = 0; i < b.len; i++)
        if (((const uint8_t *)b.buf)[i] >= 0x80 || p < 0 || p >= b.len) {
            PyBuffer_Release(&b);
            PyErr_SetString(PyExc_ValueError, "pair_match takes ASCII and a position inside it");
            return NULL;
        }
    Run seen = {0, 0, 0};
    int r = pair_match(b.buf, b.len, p, &me, &vs, &ve, &seen);
    PyBuffer_Release(&b);
    return Py_BuildValue("(innn)", r, me, vs, ve);
}

/* -- the hyperscan match collector ----------------------------------------------------------- */

/* hyperscan's Python binding calls a Python callable for every match, with the GIL taken back
 * each time; a Python function there costs a frame per match (a hundred and more per request on
 * agent telemetry). This callable does the bookkeeping of _matches.h in C instead; `take(data)`
 * adds the shapes found in `data` and returns the matches sorted, and resets it. */
typedef struct {
    PyObject_HEAD
    Matches m;
} Collector;

static int collector_init(Collector *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"adj", "anchor_of", "gate_from", "shapes", NULL};
    PyObject *adj, *anchor_of, *shapes;
    Py_ssize_t gate_from;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!nO!", kwlist, &PyTuple_Type, &adj, &PyTuple_Type, &anchor_of,
                                     &gate_from, &PyTuple_Type, &shapes))
        return -1;
    return matches_init(&self->m, adj, anchor_of, gate_from, shapes);
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

static PyObject *collector_take(Collector *self, PyObject *arg) {
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0) {
        matches_reset(&self->m);
        return NULL;
    }
    int rc = matches_add_shapes(&self->m, b.buf, b.len);
    PyBuffer_Release(&b);
    if (rc < 0) {
        matches_reset(&self->m);
        return NULL;
    }
    return matches_take(&self->m);
}

static PyMethodDef collector_methods[] = {
    {"take", (PyCFunction)collector_take, METH_O,
     "take(data) -> (offsets, anchor indexes, gate expression ids): what was collected and the shapes in data, "
     "sorted by offset; resets"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CollectorType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "processors.privacy._wirewalk.Collector",
    .tp_basicsize = sizeof(Collector),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A hyperscan match_event_handler that collects anchor offsets in C (see scanner.AnchorScanner).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)collector_init,
    .tp_dealloc = (destructor)collector_dealloc,
    .tp_call = (ternaryfunc)collector_call,
    .tp_methods = collector_methods,
};

static PyMethodDef walker_methods[] = {
    {"rewrite", (PyCFunction)(void (*)(void))walker_rewrite, METH_VARARGS | METH_KEYWORDS,
     "rewrite(raw, stages, offsets=None, ids=None) -> bytes | None"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject WalkerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "processors.privacy._wirewalk.Walker",
    .tp_basicsize = sizeof(Walker),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A compiled wire-walk plan (see processors/privacy/walker.py).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)walker_init,
    .tp_dealloc = (destructor)walker_dealloc,
    .tp_traverse = (traverseproc)walker_traverse,
    .tp_clear = (inquiry)walker_clear,
    .tp_methods = walker_methods,
};

static PyMethodDef module_methods[] = {
    {"prefilter", py_prefilter, METH_VARARGS, "prefilter(data, flags) -> int: the enabled id anchors (PF_* flags) data holds"},
    {"pair_match", py_pair_match, METH_VARARGS,
     "pair_match(ascii, p) -> (0 none | 1 match | 2 defer, match end, value start, value end): credential_pair's "
     "match at the separator p as the walker does it (for tests)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "processors.privacy._wirewalk", "The privacy processors' wire walker in C.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__wirewalk(void) {
    init_byte_class();
    s_lastindex = PyUnicode_InternFromString("lastindex");
    s_span = PyUnicode_InternFromString("span");
    s_end = PyUnicode_InternFromString("end");
    if (s_lastindex == NULL || s_span == NULL || s_end == NULL)
        return NULL;
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
        PyModule_AddIntConstant(m, "PF_HEX", PF_HEX) < 0 || PyModule_AddIntConstant(m, "PF_ULID", PF_ULID) < 0 ||
        PyModule_AddIntConstant(m, "MODE_MASK", MODE_MASK) < 0 || PyModule_AddIntConstant(m, "MODE_TEXT", MODE_TEXT) < 0 ||
        PyModule_AddIntConstant(m, "INFO_PAIR", INFO_PAIR) < 0 || PyModule_AddIntConstant(m, "INFO_FULL", INFO_FULL) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

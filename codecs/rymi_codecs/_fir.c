/* rymi_codecs._fir: the compiled inner loop of rymi_codecs.resample.Resampler.
 *
 * One Filter object per stream and direction. It keeps the stream's history and runs the
 * polyphase FIR of resample.py in integers, so that its bytes equal the numpy path's:
 *
 *   - The prototype taps are integers (the numpy path's taps times 2**TAP_BITS) and the
 *     samples are int16, so an output before rounding is the integer s = sum(tap * x),
 *     |s| < 2**39; the numpy path computes s / 2**TAP_BITS, exactly, in float64.
 *   - np.rint rounds half to even; round_output() does the same on s, then saturates to
 *     int16 as the numpy path's clipping does.
 *
 * Speed: each tap t is split as t = hi * 2**shift + lo with hi and lo in int16, the
 * shift chosen at construction (split_taps) so that sum(|hi|) * 32768 and sum(|lo|) * 32768
 * fit in int32 for every output's taps. Both dot products then run exactly in int16 x
 * int16 -> int32 arithmetic: pmaddwd on x86-64's baseline SSE2 (quad_sse2: four outputs
 * at a time, rounded in int32 lanes), and a plain loop that compilers vectorize elsewhere
 * (dot, round_output: also the last outputs of a chunk on x86). No floating point, so no
 * compiler flag or rounding mode can change a bit.
 *
 * Layout follows resample.py: for out/in = L/M, every M inputs give L outputs (a block),
 * and output i of block j reads K consecutive inputs starting at j*M + i*M/L of the work
 * buffer, whose first K - 1 samples are the history. Each output's taps are stored
 * reversed (so the dot product walks the input forwards) and zero-padded in front to a
 * multiple of 8; GUARD zero samples before the work buffer keep the padded reads in
 * bounds.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define TAP_BITS 22 /* as in resample.py */
#define PAD 8       /* dot-product lengths are multiples of this */
#define GUARD PAD   /* zero samples before the work buffer (padding reads at most PAD-1) */
#define MAX_FACTOR 4096
#define MAX_TAPS 65536
#define MAX_TAP (1LL << 30)

typedef struct {
    PyObject_HEAD
    Py_ssize_t up;      /* L */
    Py_ssize_t down;    /* M */
    Py_ssize_t k;       /* taps per phase */
    Py_ssize_t kp;      /* k rounded up to a multiple of PAD */
    Py_ssize_t window;  /* k + M - 1: inputs one block depends on */
    int shift;          /* tap = hi * 2**shift + lo */
    int16_t *hi;        /* L rows of kp: output i's taps, reversed, padded in front */
    int16_t *lo;
    Py_ssize_t *offset; /* L: where output i's padded dot product starts within a block */
    int16_t *mem;       /* GUARD + capacity samples; the work buffer starts at mem + GUARD */
    Py_ssize_t capacity;
    Py_ssize_t pending; /* history + held-back input samples at the start of the work buffer */
    long long in_total;
    long long out_total;
} FilterObject;

static void
filter_reset_state(FilterObject *self)
{
    /* As if K - 1 zero samples came before the stream (a causal filter at rest). */
    self->pending = self->k - 1;
    memset(self->mem, 0, (size_t)(GUARD + self->pending) * sizeof(int16_t));
    self->in_total = 0;
    self->out_total = 0;
}

/* Split every tap into (hi, lo) for the largest shift that keeps the int32 arithmetic exact:
 * the sums of |hi| x 32768 and |lo| x 32768, and quad_sse2's t (about s / 2**shift). */
static int
split_taps(FilterObject *self, const long long *taps, Py_ssize_t n)
{
    for (int shift = 15; shift >= 1; shift--) {
        const long long half = 1LL << (shift - 1), mod = 1LL << shift;
        int ok = 1;
        for (Py_ssize_t i = 0; i < self->up && ok; i++) {
            const Py_ssize_t phase = (i * self->down) % self->up;
            const Py_ssize_t pad = self->kp - self->k;
            long long sum_hi = 0, sum_lo = 0, sum_abs = 0;
            for (Py_ssize_t u = 0; u < self->kp; u++) {
                /* Row u holds tap phase + L*t, t = k - 1 - (u - pad): reversed. */
                long long tap = 0;
                if (u >= pad) {
                    const Py_ssize_t index = phase + self->up * (self->k - 1 - (u - pad));
                    tap = index < n ? taps[index] : 0;
                }
                long long lo = ((tap % mod) + mod) % mod;
                if (lo >= half) {
                    lo -= mod;
                }
                const long long hi = (tap - lo) / mod; /* exact: tap - lo is a multiple of mod */
                if (hi < INT16_MIN || hi > INT16_MAX) {
                    ok = 0;
                    break;
                }
                sum_abs += tap < 0 ? -tap : tap;
                sum_hi += hi < 0 ? -hi : hi;
                sum_lo += lo < 0 ? -lo : lo;
                self->hi[i * self->kp + u] = (int16_t)hi;
                self->lo[i * self->kp + u] = (int16_t)lo;
            }
            /* |sample| <= 32768: every partial sum stays within int32. */
            if (sum_hi > INT32_MAX / 32768 || sum_lo > INT32_MAX / 32768
                || (sum_abs * 32768 >> shift) >= (1LL << 30)) {
                ok = 0;
            }
        }
        if (ok) {
            self->shift = shift;
            return 0;
        }
    }
    PyErr_SetString(PyExc_ValueError, "taps too large for the exact int32 kernel");
    return -1;
}

/* Free the buffers; the object is then "not initialized" and its methods refuse to run. */
static void
filter_clear(FilterObject *self)
{
    PyMem_Free(self->hi);
    PyMem_Free(self->lo);
    PyMem_Free(self->offset);
    PyMem_Free(self->mem);
    self->hi = self->lo = self->mem = NULL;
    self->offset = NULL;
}

/* The taps as C integers, checked; NULL with an exception set on failure. */
static long long *
read_taps(PyObject *taps_obj, Py_ssize_t *n)
{
    PyObject *seq = PySequence_Fast(taps_obj, "taps must be a sequence of int");
    if (seq == NULL) {
        return NULL;
    }
    *n = PySequence_Fast_GET_SIZE(seq);
    if (*n < 1 || *n > MAX_TAPS) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "taps must hold between 1 and 65536 values");
        return NULL;
    }
    long long *taps = PyMem_New(long long, *n);
    if (taps == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        taps[i] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, i));
        if (taps[i] == -1 && PyErr_Occurred()) {
            break;
        }
        if (taps[i] < -MAX_TAP || taps[i] > MAX_TAP) {
            PyErr_SetString(PyExc_ValueError, "a tap is out of range (|tap| <= 2**30)");
            break;
        }
    }
    Py_DECREF(seq);
    if (PyErr_Occurred()) {
        PyMem_Free(taps);
        return NULL;
    }
    return taps;
}

static int
filter_init(FilterObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"taps", "up", "down", NULL};
    PyObject *taps_obj;
    Py_ssize_t up, down, n;
    filter_clear(self); /* a failed __init__ leaves no half-built (or stale) filter behind */
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Onn:Filter", kwlist, &taps_obj, &up, &down)) {
        return -1;
    }
    if (up < 1 || down < 1 || up > MAX_FACTOR || down > MAX_FACTOR) {
        PyErr_SetString(PyExc_ValueError, "up and down must be between 1 and 4096");
        return -1;
    }
    long long *taps = read_taps(taps_obj, &n);
    if (taps == NULL) {
        return -1;
    }
    self->up = up;
    self->down = down;
    self->k = (n + up - 1) / up;
    self->kp = (self->k + PAD - 1) / PAD * PAD;
    self->window = self->k + down - 1;
    self->capacity = self->window + 2048;
    self->hi = PyMem_New(int16_t, up * self->kp);
    self->lo = PyMem_New(int16_t, up * self->kp);
    self->offset = PyMem_New(Py_ssize_t, up);
    self->mem = PyMem_New(int16_t, GUARD + self->capacity);
    int status = 0;
    if (self->hi == NULL || self->lo == NULL || self->offset == NULL || self->mem == NULL) {
        PyErr_NoMemory();
        status = -1;
    }
    else {
        for (Py_ssize_t i = 0; i < up; i++) {
            self->offset[i] = (i * down) / up - (self->kp - self->k);
        }
        status = split_taps(self, taps, n);
    }
    PyMem_Free(taps);
    if (status < 0) {
        filter_clear(self);
        return -1;
    }
    filter_reset_state(self);
    return 0;
}

static void
filter_dealloc(FilterObject *self)
{
    filter_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
check_ready(FilterObject *self)
{
    if (self->mem == NULL) {
        PyErr_SetString(PyExc_ValueError, "Filter is not initialized");
        return -1;
    }
    return 0;
}

/* Round s / 2**TAP_BITS half to even (np.rint) and saturate to int16; returns it as uint16. */
static inline uint16_t
round_output(int64_t s)
{
    /* split_taps keeps |s| below 2**45: the bias (a multiple of 2**(TAP_BITS + 1)) makes
     * it non-negative without changing its low bits or the parity of the quotient, so the
     * shifts below are on an unsigned value. */
    const uint64_t bias = (uint64_t)1 << 62;
    const uint64_t u = (uint64_t)s + bias;
    const uint64_t rem = u & (((uint64_t)1 << TAP_BITS) - 1);
    const uint64_t half = (uint64_t)1 << (TAP_BITS - 1);
    uint64_t q = u >> TAP_BITS;
    if (rem > half || (rem == half && (q & 1))) {
        q++;
    }
    const int64_t value = (int64_t)q - (int64_t)(bias >> TAP_BITS);
    if (value > INT16_MAX) {
        return (uint16_t)INT16_MAX;
    }
    if (value < INT16_MIN) {
        return (uint16_t)0x8000;
    }
    return (uint16_t)value;
}

static inline int64_t
dot(const int16_t *restrict hi, const int16_t *restrict lo, const int16_t *restrict x,
    Py_ssize_t n, int shift)
{
    int32_t acc_hi = 0, acc_lo = 0;
    /* n is a multiple of PAD: a fixed-length inner loop becomes one vector step. */
    for (Py_ssize_t u = 0; u < n; u += PAD) {
        for (int v = 0; v < PAD; v++) {
            acc_hi += hi[u + v] * x[u + v];
            acc_lo += lo[u + v] * x[u + v];
        }
    }
    return (int64_t)acc_hi * ((int64_t)1 << shift) + acc_lo;
}

/* Store output sample v (uint16 bits of an int16) little-endian at out[index]. */
static inline void
store_output(unsigned char *out, Py_ssize_t index, uint16_t v)
{
    out[2 * index] = (unsigned char)(v & 0xFF);
    out[2 * index + 1] = (unsigned char)(v >> 8);
}

#if defined(__SSE2__)
#include <emmintrin.h>

/* One row's outputs in four consecutive blocks (inputs `stride` apart), SSE2 only: the
 * dot products of dot() with one shared tap load per step, a transposed horizontal sum,
 * and the rounding of round_output() on four lanes. Stores into out at `index`, `index +
 * step`, ... (x86 is little-endian, as PCM16 LE is). */
static inline void
quad_sse2(const int16_t *hi, const int16_t *lo, const int16_t *x, Py_ssize_t stride,
          Py_ssize_t n, int shift, unsigned char *out, Py_ssize_t index, Py_ssize_t step)
{
    __m128i h0 = _mm_setzero_si128(), h1 = h0, h2 = h0, h3 = h0;
    __m128i l0 = h0, l1 = h0, l2 = h0, l3 = h0;
    for (Py_ssize_t u = 0; u < n; u += PAD) {
        const __m128i th = _mm_loadu_si128((const __m128i *)(hi + u));
        const __m128i tl = _mm_loadu_si128((const __m128i *)(lo + u));
        const __m128i x0 = _mm_loadu_si128((const __m128i *)(x + u));
        const __m128i x1 = _mm_loadu_si128((const __m128i *)(x + stride + u));
        const __m128i x2 = _mm_loadu_si128((const __m128i *)(x + 2 * stride + u));
        const __m128i x3 = _mm_loadu_si128((const __m128i *)(x + 3 * stride + u));
        h0 = _mm_add_epi32(h0, _mm_madd_epi16(x0, th));
        l0 = _mm_add_epi32(l0, _mm_madd_epi16(x0, tl));
        h1 = _mm_add_epi32(h1, _mm_madd_epi16(x1, th));
        l1 = _mm_add_epi32(l1, _mm_madd_epi16(x1, tl));
        h2 = _mm_add_epi32(h2, _mm_madd_epi16(x2, th));
        l2 = _mm_add_epi32(l2, _mm_madd_epi16(x2, tl));
        h3 = _mm_add_epi32(h3, _mm_madd_epi16(x3, th));
        l3 = _mm_add_epi32(l3, _mm_madd_epi16(x3, tl));
    }
    /* Horizontal sums, transposed: lane q of hs is the sum of the lanes of h<q>. */
    __m128i a = _mm_add_epi32(_mm_unpacklo_epi32(h0, h1), _mm_unpackhi_epi32(h0, h1));
    __m128i b = _mm_add_epi32(_mm_unpacklo_epi32(h2, h3), _mm_unpackhi_epi32(h2, h3));
    const __m128i hs = _mm_add_epi32(_mm_unpacklo_epi64(a, b), _mm_unpackhi_epi64(a, b));
    a = _mm_add_epi32(_mm_unpacklo_epi32(l0, l1), _mm_unpackhi_epi32(l0, l1));
    b = _mm_add_epi32(_mm_unpacklo_epi32(l2, l3), _mm_unpackhi_epi32(l2, l3));
    const __m128i ls = _mm_add_epi32(_mm_unpacklo_epi64(a, b), _mm_unpackhi_epi64(a, b));
    /* Round s = hs * 2**shift + ls (not formed: it needs 40 bits) half to even, in int32
     * lanes: s = t * 2**shift + lr with t = hs + (ls >> shift) and 0 <= lr < 2**shift, so
     * floor(s / 2**TAP_BITS) = t >> (TAP_BITS - shift), and the remainder r (below
     * 2**TAP_BITS) is the low bits of t, shifted back, with lr below them. split_taps()
     * keeps |t| <= 2**30. Then the result is floor + ((r + 2**21 - 1 + (floor & 1)) >>
     * TAP_BITS): r + 2**21 - 1 reaches 2**TAP_BITS above half, and at half exactly when
     * floor is odd. */
    const int down_shift = TAP_BITS - shift;
    const __m128i t = _mm_add_epi32(hs, _mm_sra_epi32(ls, _mm_cvtsi32_si128(shift)));
    const __m128i lr = _mm_and_si128(ls, _mm_set1_epi32((1 << shift) - 1));
    const __m128i quotient = _mm_sra_epi32(t, _mm_cvtsi32_si128(down_shift));
    const __m128i r = _mm_or_si128(
        _mm_sll_epi32(_mm_and_si128(t, _mm_set1_epi32((1 << down_shift) - 1)),
                      _mm_cvtsi32_si128(shift)),
        lr);
    const __m128i odd = _mm_and_si128(quotient, _mm_set1_epi32(1));
    const __m128i carry = _mm_srli_epi32(
        _mm_add_epi32(_mm_add_epi32(r, _mm_set1_epi32((1 << (TAP_BITS - 1)) - 1)), odd),
        TAP_BITS);
    /* packs_epi32 saturates to int16: the clipping. */
    __m128i packed = _mm_packs_epi32(_mm_add_epi32(quotient, carry), _mm_setzero_si128());
    if (step == 1) {
        _mm_storel_epi64((__m128i *)(out + 2 * index), packed);
        return;
    }
    for (int q = 0; q < 4; q++) {
        const uint16_t v = (uint16_t)_mm_extract_epi16(packed, 0);
        memcpy(out + 2 * (index + q * step), &v, sizeof v);
        packed = _mm_srli_si128(packed, 2);
    }
}
#endif

/* Compute the outputs of `blocks` blocks into out (blocks * L PCM16 LE samples). */
static void
filter_blocks(const FilterObject *self, Py_ssize_t blocks, unsigned char *out)
{
    const int16_t *work = self->mem + GUARD;
    const Py_ssize_t up = self->up, down = self->down, kp = self->kp;
    for (Py_ssize_t i = 0; i < up; i++) {
        const int16_t *hi = self->hi + i * kp, *lo = self->lo + i * kp;
        const int16_t *x = work + self->offset[i];
        Py_ssize_t j = 0;
#if defined(__SSE2__)
        for (; j + 4 <= blocks; j += 4) {
            quad_sse2(hi, lo, x + j * down, down, kp, self->shift, out, j * up + i, up);
        }
#endif
        /* Elsewhere, and for the last blocks: one output at a time (compilers vectorize
         * dot() for NEON and SSE2 alike). */
        for (; j < blocks; j++) {
            store_output(out, j * up + i, round_output(dot(hi, lo, x + j * down, kp, self->shift)));
        }
    }
}

/* Append n samples of PCM16 LE to the work buffer (grown if needed). */
static int
append_samples(FilterObject *self, const unsigned char *data, Py_ssize_t n)
{
    const Py_ssize_t end = self->pending + n;
    if (end > self->capacity) {
        if (end > (PY_SSIZE_T_MAX / (Py_ssize_t)sizeof(int16_t)) / 2 - GUARD) {
            PyErr_NoMemory();
            return -1;
        }
        const Py_ssize_t capacity = 2 * end;
        int16_t *mem = PyMem_Resize(self->mem, int16_t, GUARD + capacity);
        if (mem == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->mem = mem;
        self->capacity = capacity;
    }
    int16_t *into = self->mem + GUARD + self->pending;
#if PY_LITTLE_ENDIAN
    if (n > 0) {
        memcpy(into, data, (size_t)n * sizeof(int16_t));
    }
#else
    for (Py_ssize_t i = 0; i < n; i++) {
        const int32_t v = data[2 * i] | (data[2 * i + 1] << 8);
        into[i] = (int16_t)(v >= 0x8000 ? v - 0x10000 : v);
    }
#endif
    self->pending = end;
    return 0;
}

static PyObject *
filter_process(FilterObject *self, PyObject *arg)
{
    Py_buffer view;
    if (check_ready(self) < 0 || PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (view.len % 2) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "expected whole PCM16 samples (an even byte count)");
        return NULL;
    }
    const Py_ssize_t n = view.len / 2;
    const int status = append_samples(self, (const unsigned char *)view.buf, n);
    PyBuffer_Release(&view);
    if (status < 0) {
        return NULL;
    }
    self->in_total += n;
    const Py_ssize_t end = self->pending;
    const Py_ssize_t blocks = end >= self->window ? (end - self->window) / self->down + 1 : 0;
    if (blocks > PY_SSIZE_T_MAX / 2 / self->up) {
        return PyErr_NoMemory();
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, 2 * blocks * self->up);
    if (out == NULL) {
        return NULL;
    }
    filter_blocks(self, blocks, (unsigned char *)PyBytes_AS_STRING(out));
    /* Keep the inputs the next block still needs (history + held-back samples). */
    const Py_ssize_t used = blocks * self->down;
    memmove(self->mem + GUARD, self->mem + GUARD + used, (size_t)(end - used) * sizeof(int16_t));
    self->pending = end - used;
    self->out_total += blocks * self->up;
    return out;
}

static PyObject *
filter_reset(FilterObject *self, PyObject *Py_UNUSED(ignored))
{
    if (check_ready(self) < 0) {
        return NULL;
    }
    filter_reset_state(self);
    Py_RETURN_NONE;
}

static PyMethodDef filter_methods[] = {
    {"process", (PyCFunction)filter_process, METH_O,
     "process(chunk) -> bytes: filter PCM16 LE samples; return the outputs now complete."},
    {"reset", (PyCFunction)filter_reset, METH_NOARGS,
     "reset() -> None: forget the stream (history back to silence, totals to 0)."},
    {NULL, NULL, 0, NULL},
};

static PyObject *
filter_get_in_total(FilterObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLongLong(self->in_total);
}

static PyObject *
filter_get_out_total(FilterObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLongLong(self->out_total);
}

static PyGetSetDef filter_getset[] = {
    {"in_total", (getter)filter_get_in_total, NULL, "Input samples since the last reset.", NULL},
    {"out_total", (getter)filter_get_out_total, NULL, "Output samples since the last reset.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject FilterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rymi_codecs._fir.Filter",
    .tp_doc = "Filter(taps, up, down): streaming integer polyphase FIR (see resample.py).",
    .tp_basicsize = sizeof(FilterObject),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)filter_init,
    .tp_dealloc = (destructor)filter_dealloc,
    .tp_methods = filter_methods,
    .tp_getset = filter_getset,
};

static struct PyModuleDef fir_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "rymi_codecs._fir",
    .m_doc = "Compiled inner loop of rymi_codecs.resample (exact integer polyphase FIR).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__fir(void)
{
    if (PyType_Ready(&FilterType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&fir_module);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "Filter", (PyObject *)&FilterType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}

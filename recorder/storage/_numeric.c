/* PostgreSQL's binary `numeric` for a Python Decimal, for the writer's COPY.
 *
 * psycopg's own binary dumper reads a Decimal through `Decimal.as_tuple()`, which builds a
 * named tuple in Python for every value: 1.5 us a value, most of the writer's encoding time
 * (docs/benchmarks.md, "Writer"). This reads the Decimal's exact text, `str(value)`, instead:
 * 0.2 us. Only a Decimal (not a subclass) whose text has the plain form `-?D+(.D+)?` is
 * read here; an exponent ("1E-8"), NaN, an infinity, a text longer than MAX_TEXT and any
 * other type (a float by mistake must fail as it did) go to the fallback, psycopg's own
 * dumper, set once with `configure`. The bytes are psycopg's bytes either way
 * (tests/storage/test_numeric_encoder.py compares them), which PostgreSQL's numeric_recv
 * reads as exactly the Decimal's value and scale.
 *
 * The binary form: four big-endian int16 (ndigits, weight, sign, dscale), then ndigits
 * big-endian int16 digits in base 10000; the first digit multiplies 10000^weight. Zero
 * groups at either end are left out, as PostgreSQL leaves them out itself.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define MAX_TEXT 4000                        /* digits past this: the fallback's business */
#define MAX_GROUPS (MAX_TEXT / 4 + 2)
#define NUMERIC_NEG 0x4000

static PyObject *decimal_type = NULL;
static PyObject *fallback = NULL;

static Py_ssize_t
skip_digits(const char *s, Py_ssize_t at, Py_ssize_t end)
{
    while (at < end && s[at] >= '0' && s[at] <= '9')
        at++;
    return at;
}

/* Four decimal digits of `s[start:end]` from `first` on, as one base-10000 digit; places
 * outside the range count as zeros (the padding of the integer part on the left and of the
 * fraction on the right). */
static unsigned
group(const char *s, Py_ssize_t start, Py_ssize_t end, Py_ssize_t first)
{
    unsigned value = 0;
    for (Py_ssize_t at = first; at < first + 4; at++)
        value = value * 10 + ((at >= start && at < end) ? (unsigned)(s[at] - '0') : 0);
    return value;
}

static void
put16(unsigned char *out, unsigned value)
{
    out[0] = (unsigned char)((value >> 8) & 0xff);
    out[1] = (unsigned char)(value & 0xff);
}

static PyObject *
dump(PyObject *module, PyObject *value)
{
    if (fallback == NULL || decimal_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_numeric.configure was not called");
        return NULL;
    }
    if ((PyObject *)Py_TYPE(value) != decimal_type)
        return PyObject_CallOneArg(fallback, value);
    PyObject *text = PyObject_Str(value);
    if (text == NULL)
        return NULL;
    Py_ssize_t length;
    const char *s = PyUnicode_AsUTF8AndSize(text, &length);
    if (s == NULL) {
        Py_DECREF(text);
        return NULL;
    }
    Py_ssize_t at = (length > 0 && s[0] == '-') ? 1 : 0;
    int negative = at == 1;
    Py_ssize_t int_start = at, int_end = skip_digits(s, at, length);
    Py_ssize_t frac_start = int_end, frac_end = int_end;
    if (int_end < length && s[int_end] == '.') {
        frac_start = int_end + 1;
        frac_end = skip_digits(s, frac_start, length);
    }
    int plain = length <= MAX_TEXT && int_end > int_start && frac_end == length
                && (frac_start == int_end || frac_end > frac_start);
    if (!plain) {
        Py_DECREF(text);
        return PyObject_CallOneArg(fallback, value);
    }
    while (int_start < int_end && s[int_start] == '0')
        int_start++;
    Py_ssize_t int_groups = (int_end - int_start + 3) / 4;
    Py_ssize_t frac_groups = (frac_end - frac_start + 3) / 4;
    unsigned digits[MAX_GROUPS];
    for (Py_ssize_t g = 0; g < int_groups; g++)   /* the integer part ends a group */
        digits[g] = group(s, int_start, int_end, int_end - 4 * (int_groups - g));
    for (Py_ssize_t g = 0; g < frac_groups; g++)  /* the fraction starts one */
        digits[int_groups + g] = group(s, frac_start, frac_end, frac_start + 4 * g);
    Py_ssize_t first = 0, last = int_groups + frac_groups;
    while (first < last && digits[first] == 0)
        first++;
    while (last > first && digits[last - 1] == 0)
        last--;
    Py_ssize_t ndigits = last - first;
    Py_ssize_t weight = ndigits ? int_groups - 1 - first : 0;
    Py_ssize_t dscale = frac_end - frac_start;
    Py_DECREF(text);

    PyObject *out = PyBytes_FromStringAndSize(NULL, 8 + 2 * ndigits);
    if (out == NULL)
        return NULL;
    unsigned char *bytes = (unsigned char *)PyBytes_AS_STRING(out);
    put16(bytes, (unsigned)ndigits);
    put16(bytes + 2, (unsigned)(weight & 0xffff));   /* int16, two's complement */
    put16(bytes + 4, (negative && ndigits) ? NUMERIC_NEG : 0);
    put16(bytes + 6, (unsigned)dscale);
    for (Py_ssize_t g = 0; g < ndigits; g++)
        put16(bytes + 8 + 2 * g, digits[first + g]);
    return out;
}

static PyObject *
configure(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "configure(decimal_type, fallback)");
        return NULL;
    }
    Py_XSETREF(decimal_type, Py_NewRef(args[0]));
    Py_XSETREF(fallback, Py_NewRef(args[1]));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"dump", dump, METH_O, "PostgreSQL's binary numeric of a Decimal, as bytes."},
    {"configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL,
     "configure(decimal_type, fallback): the type dump reads itself, and the callable "
     "that encodes everything else (psycopg's dumper)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "recorder.storage._numeric",
    "PostgreSQL's binary numeric of a Decimal, read from its text.", -1, methods,
};

PyMODINIT_FUNC
PyInit__numeric(void)
{
    return PyModule_Create(&module);
}

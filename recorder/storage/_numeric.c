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
 *
 * `split_rows` serves the tables that store a Decimal as exact scaled integers
 * (migrations/0020_scaled_prices.sql): it reads the same text, exponent forms included, into
 * units and scale (value = units * 10^-scale, scale = the Decimal's decimals, never below
 * 0, as PostgreSQL's numeric keeps them), and leaves a value that does not fit (a scale
 * above MAX_SCALE, units beyond a bigint, NaN, an infinity, any other type) whole, for the
 * exact `numeric` column. recorder/storage/numeric.py has the same rule in Python.
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

#define MAX_SCALE 18                         /* recorder/storage/numeric.py, 0020 */
#define MAX_UNITS 9223372036854775807ULL      /* |units| of a bigint, -2^63 left out */

/* units and scale of a Decimal's text `s`; 0 when it does not fit. The forms of str(): an
 * optional '-', digits, optionally '.' and digits, optionally 'E', a sign and digits. */
static int
parse_scaled(const char *s, Py_ssize_t length, long long *units, long *scale)
{
    Py_ssize_t at = (length > 0 && s[0] == '-') ? 1 : 0;
    int negative = at == 1;
    Py_ssize_t int_start = at, int_end = skip_digits(s, at, length);
    Py_ssize_t frac_start = int_end, frac_end = int_end;
    if (int_end == int_start)
        return 0;                                            /* NaN, Infinity */
    if (int_end < length && s[int_end] == '.') {
        frac_start = int_end + 1;
        frac_end = skip_digits(s, frac_start, length);
        if (frac_end == frac_start)
            return 0;
    }
    long exponent = 0;
    at = frac_end;
    if (at < length && (s[at] == 'E' || s[at] == 'e')) {
        at++;
        int exp_negative = at < length && s[at] == '-';
        if (at < length && (s[at] == '-' || s[at] == '+'))
            at++;
        Py_ssize_t exp_end = skip_digits(s, at, length);
        if (exp_end == at || exp_end - at > 6)
            return 0;
        for (; at < exp_end; at++)
            exponent = exponent * 10 + (s[at] - '0');
        if (exp_negative)
            exponent = -exponent;
    }
    if (at != length)
        return 0;
    exponent -= (long)(frac_end - frac_start);               /* of the digits as one integer */
    if (exponent < -MAX_SCALE)
        return 0;
    unsigned long long value = 0;
    for (Py_ssize_t i = int_start; i < frac_end; i++) {
        if (i == int_end)
            continue;                                        /* the point */
        if (value > (MAX_UNITS - (unsigned)(s[i] - '0')) / 10)
            return 0;                                        /* beyond a bigint */
        value = value * 10 + (unsigned)(s[i] - '0');
    }
    for (long e = 0; e < exponent && value != 0; e++) {     /* 1.2E+7: units 12000000 */
        if (value > MAX_UNITS / 10)
            return 0;
        value *= 10;
    }
    *units = negative ? -(long long)value : (long long)value;
    *scale = exponent < 0 ? -exponent : 0;
    return 1;
}

/* (units, scale, None) for a Decimal that fits, else (None, None, value). `out` has room
 * for the three. New references. */
static int
split_value(PyObject *value, PyObject **out)
{
    if ((PyObject *)Py_TYPE(value) == decimal_type) {
        PyObject *text = PyObject_Str(value);
        if (text == NULL)
            return -1;
        Py_ssize_t length;
        const char *s = PyUnicode_AsUTF8AndSize(text, &length);
        if (s == NULL) {
            Py_DECREF(text);
            return -1;
        }
        long long units;
        long scale;
        int fits = length <= MAX_TEXT && parse_scaled(s, length, &units, &scale);
        Py_DECREF(text);
        if (fits) {
            out[0] = PyLong_FromLongLong(units);
            out[1] = PyLong_FromLong(scale);
            if (out[0] == NULL || out[1] == NULL) {
                Py_XDECREF(out[0]);
                Py_XDECREF(out[1]);
                return -1;
            }
            out[2] = Py_NewRef(Py_None);
            return 0;
        }
    }
    out[0] = Py_NewRef(Py_None);
    out[1] = Py_NewRef(Py_None);
    out[2] = Py_NewRef(value);
    return 0;
}

static PyObject *
split_rows(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_Check(args[0]) || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "split_rows(rows: list, positions: tuple)");
        return NULL;
    }
    if (decimal_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_numeric.configure was not called");
        return NULL;
    }
    PyObject *rows = args[0], *positions = args[1];
    Py_ssize_t count = PyList_GET_SIZE(rows), splits = PyTuple_GET_SIZE(positions);
    Py_ssize_t at[16];
    if (splits > 16) {
        PyErr_SetString(PyExc_ValueError, "split_rows: at most 16 positions");
        return NULL;
    }
    for (Py_ssize_t k = 0; k < splits; k++) {
        at[k] = PyLong_AsSsize_t(PyTuple_GET_ITEM(positions, k));
        if (at[k] < 0 || (k > 0 && at[k] <= at[k - 1])) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "split_rows: positions ascending, from 0");
            return NULL;
        }
    }
    PyObject *result = PyList_New(count);
    if (result == NULL)
        return NULL;
    for (Py_ssize_t r = 0; r < count; r++) {
        PyObject *row = PyList_GET_ITEM(rows, r);
        if (!PyTuple_Check(row) || (splits && PyTuple_GET_SIZE(row) <= at[splits - 1])) {
            PyErr_SetString(PyExc_TypeError, "split_rows: each row a tuple holding the positions");
            Py_DECREF(result);
            return NULL;
        }
        Py_ssize_t width = PyTuple_GET_SIZE(row);
        PyObject *split = PyTuple_New(width + 2 * splits);
        if (split == NULL) {
            Py_DECREF(result);
            return NULL;
        }
        PyList_SET_ITEM(result, r, split);
        Py_ssize_t to = 0, k = 0;
        for (Py_ssize_t from = 0; from < width; from++) {
            PyObject *item = PyTuple_GET_ITEM(row, from);
            if (k < splits && from == at[k]) {
                PyObject *parts[3];
                if (split_value(item, parts) < 0) {
                    Py_DECREF(result);
                    return NULL;
                }
                for (int i = 0; i < 3; i++)
                    PyTuple_SET_ITEM(split, to++, parts[i]);
                k++;
            } else {
                PyTuple_SET_ITEM(split, to++, Py_NewRef(item));
            }
        }
    }
    return result;
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
    {"split_rows", (PyCFunction)(void (*)(void))split_rows, METH_FASTCALL,
     "split_rows(rows, positions): each row with the Decimal at each position replaced by "
     "(units, scale, None), or (None, None, value) when it does not fit."},
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

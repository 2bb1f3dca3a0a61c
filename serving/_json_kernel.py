"""The compiled half of serving/json_tensors.py: one pass over a JSON array of arrays of numbers (numba).

Imported only by json_tensors' loader thread (numba's import and the first compile take about a second).
Strict JSON throughout: RFC 8259 numbers (no leading zeros, no ``+``, ``.5``, ``1.``, NaN or Infinity),
whitespace only where JSON allows it, no empty lists, no trailing commas. Whatever it does not read
for sure (a ragged array, a number needing more than 18 significant digits or a power of ten beyond
1e22 or 1e-44, an integer beyond 2**53, a double it cannot round for certain) is refused (status FAIL): the
caller then parses the body with orjson, which answers it as before.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

OK, FAIL, FULL = 0, 1, 2
MAX_DEPTH = 32
_POW10 = np.array([10.0 ** k for k in range(23)])  # each exact in a double
_TWO53 = 9007199254740992
_MAX_DIGITS = 18  # a mantissa below 10**18 fits an int64
_MARGIN = 0.5 - 1.0 / 1048576.0  # how far from a halfway point a double-double result must be to be rounded here
_SURE = 2.0 ** -54 - 2.0 ** -74  # |s| * this is under half an ulp of s (and of the ulp below a power of two)


@njit(cache=True, inline="always")
def _two_prod(a, b):
    """``(p, e)`` with ``p + e == a * b`` exactly (Dekker: no fused multiply-add needed)."""
    p = a * b
    c = 134217729.0 * a
    ah = c - (c - a)
    al = a - ah
    c = 134217729.0 * b
    bh = c - (c - b)
    bl = b - bh
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


@njit(cache=True, inline="always")
def _divide(hi, lo, d):
    """``(hi + lo) / d`` in double-double, ``d`` a power of ten a double holds exactly."""
    q = hi / d
    back, err = _two_prod(q, d)
    r = (((hi - back) - err) + lo) / d
    s = q + r
    return s, r - (s - q)


@njit(cache=True, inline="always")
def _double(m, e10):
    """The double nearest ``m * 10**e10`` (``0 < m < 10**18``), as Python's ``float()`` of the text gives it;
    -1.0 when that is not certain here. Exact with one IEEE operation when ``m <= 2**53`` and
    ``|e10| <= 22`` (Clinger's fast path); otherwise computed in double-double (about 100 bits, down to
    1e-44) and kept only when that result is clearly nearer one double than the halfway point to the next."""
    if e10 < -44 or e10 > 22:
        return -1.0
    if m <= _TWO53 and e10 >= -22:
        if e10 >= 0:
            return float(m) * _POW10[e10]
        return float(m) / _POW10[-e10]
    hi = float(m)
    lo = float(m - np.int64(hi))  # exact: m - hi is small
    if e10 >= 0:
        p, err = _two_prod(hi, _POW10[e10])
        small = err + lo * _POW10[e10]
    elif e10 >= -22:
        p, small = _divide(hi, lo, _POW10[-e10])
    else:
        p, small = _divide(hi, lo, _POW10[22])
        p, small = _divide(p, small, _POW10[-e10 - 22])
    s = p + small
    bb = s - p
    t = (p - (s - bb)) + (small - bb)  # s + t == p + small exactly (two-sum)
    if abs(t) < abs(s) * _SURE:  # well inside half an ulp of s, whatever s's exponent (most values)
        return s
    f, e = math.frexp(s)
    ulp = math.ldexp(1.0, e - 53)
    if f == 0.5 and t < 0.0:  # a power of two: the double below is nearer; left to orjson
        return -1.0
    if abs(t) >= ulp * _MARGIN:
        return -1.0
    return s


@njit(cache=True, inline="always")
def _digits(b, i, m):
    """``(m, i)``: the decimal digits from ``b[i]`` on, appended to ``m``; ``i`` past the last of them."""
    n = b.shape[0]
    while i < n:
        d = np.int64(b[i]) - 48
        if d < 0 or d > 9:
            break
        m = m * 10 + d
        i += 1
    return m, i


@njit(cache=True, inline="always")
def _exponent(b, i):
    """``(status, e10, i)``: the exponent after an ``e``/``E`` at ``b[i - 1]``, ``i`` past it."""
    n = b.shape[0]
    negative = False
    if i < n and (b[i] == 43 or b[i] == 45):
        negative = b[i] == 45
        i += 1
    if i >= n or b[i] < 48 or b[i] > 57:
        return FAIL, 0, i
    exponent = 0
    while i < n and b[i] >= 48 and b[i] <= 57:
        if exponent < 100000:
            exponent = exponent * 10 + (np.int64(b[i]) - 48)
        i += 1
    return OK, -exponent if negative else exponent, i


@njit(cache=True)
def _number(b, i):
    """``(status, value, i)``: the JSON number at ``b[i]`` as Python's ``float()`` of its text gives it,
    ``i`` just past it; FAIL for what is not a strict JSON number or is not read for sure here."""
    n = b.shape[0]
    negative = b[i] == 45  # -
    if negative:
        i += 1
        if i >= n or b[i] < 48 or b[i] > 57:
            return FAIL, 0.0, i
    m = np.int64(0)
    e10 = 0
    whole = True
    if b[i] == 48:  # 0: no digit may follow it
        i += 1
        if i < n and b[i] >= 48 and b[i] <= 57:
            return FAIL, 0.0, i
        digits = 0
    else:
        start = i
        m, i = _digits(b, i, m)
        digits = i - start
    if i < n and b[i] == 46:  # .
        whole = False
        i += 1
        start = i
        if m == 0:  # leading zeros of a fraction are not significant digits
            while i < n and b[i] == 48:
                i += 1
        significant = i
        m, i = _digits(b, i, m)
        if i == start:
            return FAIL, 0.0, i
        digits += i - significant
        e10 -= i - start
    if digits > _MAX_DIGITS:
        return FAIL, 0.0, i
    if i < n and (b[i] == 101 or b[i] == 69):  # e E
        whole = False
        status, exponent, i = _exponent(b, i + 1)
        if status != OK:
            return FAIL, 0.0, i
        e10 += exponent
    if m == 0:
        return OK, (-0.0 if negative and not whole else 0.0), i  # JSON's -0 is the integer 0; -0.0 a float
    if whole and m > _TWO53:  # an integer a double does not hold exactly
        return FAIL, 0.0, i
    value = _double(m, e10)
    if value < 0.0:
        return FAIL, 0.0, i
    return OK, (-value if negative else value), i


@njit(cache=True)
def parse_nested(b, i, out, work, min_depth):
    """Read the JSON array at ``b[i] == '['`` into ``out`` (row-major), its numbers at least ``min_depth``
    lists deep. ``work`` (2 * (MAX_DEPTH + 2) int64) receives the shape: ``work[1..ndim]``. Returns
    ``(status, count, ndim, end)``, ``end`` just past the array's closing bracket."""
    n = b.shape[0]
    dims = work[:MAX_DEPTH + 2]
    counts = work[MAX_DEPTH + 2:]
    for k in range(MAX_DEPTH + 2):
        dims[k] = -1
        counts[k] = 0
    depth = 0
    leaf = -1  # the depth of the numbers, once the first is seen
    count = 0
    expect_value = True
    while True:
        while i < n and (b[i] == 32 or b[i] == 10 or b[i] == 13 or b[i] == 9):
            i += 1
        if i >= n:
            return FAIL, 0, 0, i
        c = b[i]
        if not expect_value:
            if c == 44:  # ,
                i += 1
                expect_value = True
                continue
            if c != 93:  # ]
                return FAIL, 0, 0, i
            if dims[depth] == -1:
                dims[depth] = counts[depth]
            elif dims[depth] != counts[depth]:
                return FAIL, 0, 0, i
            depth -= 1
            i += 1
            if depth == 0:
                return OK, count, leaf, i
            counts[depth] += 1
            continue
        if c == 91:  # [
            if (leaf != -1 and depth >= leaf) or depth >= MAX_DEPTH:
                return FAIL, 0, 0, i
            depth += 1
            counts[depth] = 0
            i += 1
            continue
        if c != 45 and (c < 48 or c > 57):  # not a number's - or digit (also: an empty list, a comma too many)
            return FAIL, 0, 0, i
        if leaf == -1:
            if depth < min_depth:  # MLflow's flat list is a column's values, not a tensor
                return FAIL, 0, 0, i
            leaf = depth
        elif depth != leaf:
            return FAIL, 0, 0, i
        status, value, i = _number(b, i)
        if status != OK or count >= out.shape[0]:
            return (FAIL if status != OK else FULL), 0, 0, i
        out[count] = value
        count += 1
        counts[depth] += 1
        expect_value = False

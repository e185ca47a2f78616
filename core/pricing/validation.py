"""Input coercion and validation shared by every pricing function.

Two modes, chosen per call with ``strict=``:

* flagging (the default): rows with bad inputs come back as NaN (and, for implied vol,
  with a reason code). A live option chain always carries a few junk quotes (zero bids,
  NaN marks, contracts that expired this morning); one of them must not sink the batch.
* strict: raise :class:`PricingInputError` (a ``ValueError``) naming the field, the
  offending positions and values, and the fix. Use it where inputs come from code or
  configuration, where a bad value is a bug to surface rather than data to skip.

Positions in error messages are indices into the flattened, broadcast inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

__all__ = [
    "CHUNK",
    "BoolArray",
    "FloatArray",
    "PricingInputError",
    "as_float_array",
    "broadcast_flat",
    "chunk",
    "invalid_mask",
    "parse_right",
    "validate_inputs",
]


class PricingInputError(ValueError):
    """A pricing input is unusable; the message names field, bad values and the fix."""


@dataclass(frozen=True, slots=True)
class _Rule:
    """What a field means, what it must satisfy, and how a caller fixes it."""

    meaning: str
    requirement: str
    positive: bool
    fix: str


_RULES: Final[dict[str, _Rule]] = {
    "price": _Rule(
        "option price",
        "finite and > 0",
        True,
        "drop no-quote/zero-bid rows, or pass the mid of a two-sided market",
    ),
    "S": _Rule(
        "spot (underlying price)",
        "finite and > 0",
        True,
        "pass the underlying's last or mid price; 0/NaN usually means the quote is missing",
    ),
    "K": _Rule(
        "strike",
        "finite and > 0",
        True,
        "check the contract definition; strikes are positive prices",
    ),
    "T": _Rule(
        "time to expiry in years",
        "finite and > 0",
        True,
        "drop expired contracts (value them at intrinsic) and pass T = seconds_left / "
        "(365 * 86400)",
    ),
    "r": _Rule(
        "risk-free rate (continuous, decimal)",
        "finite",
        False,
        "pass a decimal rate such as 0.05 for 5%",
    ),
    "q": _Rule(
        "dividend yield (continuous, decimal)",
        "finite",
        False,
        "pass a decimal yield such as 0.013, or 0.0 if none",
    ),
    "sigma": _Rule(
        "volatility (decimal, per sqrt(year))",
        "finite and > 0",
        True,
        "pass a positive decimal such as 0.20 for 20%; a NaN usually means an upstream IV "
        "solve failed, so filter on its reason code first",
    ),
}

_MAX_SHOWN: Final = 5


def as_float_array(value: ArrayLike, name: str) -> FloatArray:
    """Coerce anything array-like (lists, numpy, polars Series) to a float64 array.

    Polars nulls become NaN, which the flagging path then treats as a bad row.
    """
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PricingInputError(
            f"{name}: cannot convert to a float array ({exc}); pass numbers, a numpy "
            "array or a numeric polars Series"
        ) from exc


_CALL_CODES: Final = ("C", "c", "CALL", "call", "Call")
_PUT_CODES: Final = ("P", "p", "PUT", "put", "Put")


def parse_right(right: ArrayLike) -> BoolArray:
    """Return ``is_call`` as a bool array from booleans or 'C'/'P'/'CALL'/'PUT' codes.

    An unknown right always raises, in both modes: it is a schema error (wrong column),
    not a market-data glitch, and guessing would price the wrong side of the book.
    """
    arr = np.asarray(right)
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind not in "USO":
        raise PricingInputError(
            f"is_call: expected booleans or right codes 'C'/'P', got dtype {arr.dtype}; "
            "pass a bool array (True = call) or the contract's right column"
        )
    is_call = np.zeros(arr.shape, dtype=np.bool_)
    known = np.zeros(arr.shape, dtype=np.bool_)
    for code in _CALL_CODES:
        hit = arr == code
        is_call |= hit
        known |= hit
    for code in _PUT_CODES:
        known |= arr == code
    if not known.all():
        bad = np.flatnonzero(~known.ravel())
        shown = arr.ravel()[bad[:_MAX_SHOWN]].tolist()
        raise PricingInputError(
            f"is_call: unknown option right(s) {shown!r} at index {bad[:_MAX_SHOWN].tolist()} "
            f"({bad.size} of {arr.size} rows); use 'C'/'CALL' or 'P'/'PUT' (or booleans)"
        )
    return is_call


# Work on blocks this long: every temporary then stays in cache instead of costing a
# fresh multi-megabyte allocation (and its page faults) per numpy operation, which
# on 1M-row inputs is a 2-4x slowdown.
CHUNK: Final = 1 << 15


def broadcast_flat(*arrays: np.ndarray) -> tuple[list[np.ndarray], tuple[int, ...], int]:
    """Flatten arrays to the broadcast shape for chunked kernels.

    Size-1 inputs stay 0-d (numpy broadcasts them for free inside each chunk); full-size
    inputs become flat views; only partially broadcast ones are copied.
    """
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    n = int(np.prod(shape, dtype=np.int64))
    flat: list[np.ndarray] = []
    for a in arrays:
        if a.size == 1:
            flat.append(a.reshape(()))
        elif a.shape == shape:
            flat.append(a.ravel())
        else:
            flat.append(np.broadcast_to(a, shape).ravel())
    return flat, shape, n


def chunk(a: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Slice a flat input for one block; 0-d (broadcast) inputs pass through."""
    return a if a.ndim == 0 else a[start:stop]


def _bad(name: str, values: FloatArray) -> BoolArray:
    rule = _RULES[name]
    with np.errstate(invalid="ignore"):
        if rule.positive:
            return ~(values > 0.0) | ~np.isfinite(values)
        return ~np.isfinite(values)


def invalid_mask(fields: Mapping[str, FloatArray]) -> BoolArray:
    """Rows (of the broadcast shape) where any field breaks its rule; no raising."""
    bad: BoolArray | None = None
    for name, values in fields.items():
        b = _bad(name, values)
        bad = b if bad is None else (bad | b)
    assert bad is not None, "invalid_mask needs at least one field"
    return bad


def validate_inputs(**fields: ArrayLike) -> None:
    """Strict check: raise :class:`PricingInputError` for the first field that is bad.

    Fields are checked in the order given; known names are ``price, S, K, T, r, q,
    sigma``. Arrays are broadcast together so the reported index is the row a caller
    sees in its chain.
    """
    arrays = [as_float_array(v, k) for k, v in fields.items()]
    try:
        shaped = np.broadcast_arrays(*arrays)
    except ValueError as exc:
        shapes = {k: np.shape(a) for k, a in zip(fields, arrays, strict=True)}
        raise PricingInputError(
            f"inputs do not broadcast together: shapes {shapes}; pass equal-length arrays "
            "or scalars"
        ) from exc
    for name, values in zip(fields, shaped, strict=True):
        bad = np.flatnonzero(_bad(name, values).ravel())
        if bad.size:
            rule = _RULES[name]
            shown = values.ravel()[bad[:_MAX_SHOWN]].tolist()
            more = "" if bad.size <= _MAX_SHOWN else f" (first {_MAX_SHOWN} shown)"
            raise PricingInputError(
                f"{name} ({rule.meaning}) must be {rule.requirement}; got {shown} at index "
                f"{bad[:_MAX_SHOWN].tolist()}{more}, {bad.size} of {values.size} rows bad. "
                f"Fix: {rule.fix}."
            )

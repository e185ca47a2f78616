"""Where the Delta tables live, as deltalake needs it, and what a storage failure means.

`storage.root` is a local directory or `s3://bucket/prefix` (AWS S3 or an S3-compatible
server: MinIO, R2, ...); `core.config.storage_problems` has already refused unsafe
settings. Here the S3 options get V6's one safety default: conditional put (`etag`), with
which delta-rs commits a version only if no other writer committed it first, so two
processes writing at once never overwrite each other's commits (deltalake 1.6 has no
DynamoDB lock any more). `storage_error` turns deltalake's multi-line object-store errors
into the one line an operator can act on; `round_trip` proves a root is writable.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import UTC, datetime

import polars as pl
from deltalake import DeltaTable, write_deltalake

from core.config import S3_SAFE_CONDITIONAL_PUT

# `round_trip` writes here, beside the tables (never one of them): one tiny Delta table
# overwritten on every check, so repeated checks do not grow the store.
PROBE_TABLE = "_v6_probe"


def is_remote(root: str) -> bool:
    return "://" in root


def deltalake_options(root: str, options: Mapping[str, str]) -> dict[str, str]:
    """`options` plus conditional put on S3 roots unless set (the config refuses any
    other value); local roots are passed through unchanged."""
    out = dict(options)
    if is_remote(root):
        lowered = {k.lower() for k in out}
        if not lowered & {"aws_conditional_put", "conditional_put"}:
            out["aws_conditional_put"] = S3_SAFE_CONDITIONAL_PUT
    return out


# (fragment of the object store's error, what it means and the fix), first match wins.
_CAUSES = (
    (
        ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
         "403 Forbidden", "AccessDenied"),
        "the storage credentials were refused",
        "check aws_access_key_id / aws_secret_access_key (and aws_session_token) in "
        "storage.storage_options or the AWS_* environment, and that the key may read and "
        "write the bucket",
    ),
    (
        ("NoSuchBucket",),
        "the bucket does not exist",
        "create it, or fix the bucket name in storage.root",
    ),
    (
        ("Connection refused", "error sending request", "dns error", "connect error",
         "timed out", "Timeout"),
        "the storage endpoint cannot be reached",
        "check aws_endpoint_url in storage.storage_options and that the server is running",
    ),
)  # fmt: skip


def storage_error(root: str, exc: BaseException) -> str:
    """One line: what went wrong reaching `root`, and how to fix it."""
    text = str(exc)
    for fragments, what, fix in _CAUSES:
        if any(f.lower() in text.lower() for f in fragments):
            return f"storage {root}: {what}; {fix}"
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    return f"storage {root}: {first}; check storage.root and storage.storage_options"


def round_trip(root: str, options: Mapping[str, str]) -> str:
    """Write a fresh nonce to `<root>/_v6_probe` and read it back; returns the nonce.

    Raises what deltalake raises (`storage_error` explains it), or ValueError when what
    comes back is not what was written."""
    uri = f"{root.rstrip('/')}/{PROBE_TABLE}"
    opts = deltalake_options(root, options) or None
    nonce = secrets.token_hex(8)
    row = pl.DataFrame({"nonce": [nonce], "at": [datetime.now(UTC)]})
    write_deltalake(uri, row, mode="overwrite", storage_options=opts)
    back = pl.scan_delta(DeltaTable(uri, storage_options=opts)).collect()
    if back.get_column("nonce").to_list() != [nonce]:
        raise ValueError(
            f"storage {root}: wrote probe {nonce} but read back "
            f"{back.get_column('nonce').to_list()}; another process is writing {uri}, or "
            "the store does not read its own writes"
        )
    return nonce

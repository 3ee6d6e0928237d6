"""Full run output: one append blob per target and stream, written by the VM, tailed live.

Why: the instance view keeps only the last 4 KB of output, and blob output fails silently when
misconfigured (the service stopped minting SAS in 2022; run-as breaks uploads; managed-identity
mode needs a role). azrun creates the blobs itself before dispatch (so a bad container or a
missing role fails before anything runs), hands the VM a per-blob ``racw`` SAS or a managed
identity, tails the blobs while the run is in flight, and cross-checks them with the instance
view at completion.

Pieces:

* :class:`OutputStore` (``_store``): the container; ``open`` / ``from_settings``, ``prepare``
  (create blobs + write access as a :class:`BlobPair`; one blob pair per resource id, under
  :func:`target_path`), ``urls``, ``read``, ``download``,
  ``list_run``; request counting and a storage token bucket of its own.
* SAS (``_sas``): account-key or user-delegation signers, lifetime rules, ``--blob-identity``.
* :class:`Tailer` (``_tail``): adaptive conditional polling of many targets, ``complete``.
* :class:`LineSplitter` (``_lines``): bytes -> lines, UTF-8 safe across chunk boundaries.
* Without storage (``_fallback``): :data:`NO_STORAGE_NOTICE`, :func:`instance_view_output`.
* Client options and error wording (``_connect``).

The printers (``[vm] line``, JSON lines) and the ``azrun logs`` readers only the CLI uses live
with it: :mod:`azrun.cli._print` and :mod:`azrun.cli._logs_read`.
"""

from __future__ import annotations

from azrun.output._fallback import INSTANCE_VIEW_LIMIT_BYTES, NO_STORAGE_NOTICE, instance_view_output
from azrun.output._lines import LineSplitter, TailLines, split_text
from azrun.output._sas import (
    MAX_SAS_LIFETIME_S,
    AccountKeySigner,
    UserDelegationSigner,
    parse_blob_identity,
    sas_lifetime_s,
)
from azrun.output._store import (
    DEFAULT_CONTAINER,
    STREAMS,
    BlobPair,
    Chunk,
    OutputStore,
    RunBlob,
    StorageStats,
    blob_name,
    container_url_from_settings,
    target_path,
)
from azrun.output._tail import Notice, Sink, Tailer, TailStats

__all__ = [
    "DEFAULT_CONTAINER",
    "INSTANCE_VIEW_LIMIT_BYTES",
    "MAX_SAS_LIFETIME_S",
    "NO_STORAGE_NOTICE",
    "STREAMS",
    "AccountKeySigner",
    "BlobPair",
    "Chunk",
    "LineSplitter",
    "Notice",
    "OutputStore",
    "RunBlob",
    "Sink",
    "StorageStats",
    "TailLines",
    "TailStats",
    "Tailer",
    "UserDelegationSigner",
    "blob_name",
    "container_url_from_settings",
    "instance_view_output",
    "parse_blob_identity",
    "sas_lifetime_s",
    "split_text",
    "target_path",
]

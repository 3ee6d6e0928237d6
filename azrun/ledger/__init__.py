"""The ledger: runs and per-target states in one SQLite file under the state dir.

* :class:`Ledger` (``_store``): the file, its transactions, and run leases.
* :class:`RunLedger` (``_writer``): what a run's driver writes through: every write on a
  background thread (never on the event loop), the lease renewed there, and a gate before each
  dispatch that waits for the target's Dispatching row to be durable and checks the lease.
* Rows as values (``_records``): :class:`RunRecord`, :class:`TargetRecord`, target JSON.
"""

from __future__ import annotations

from azrun.ledger._records import (
    RUN_STATUSES,
    SCHEMA_VERSION,
    RunRecord,
    TargetRecord,
    target_from_json,
    target_key,
    target_to_json,
)
from azrun.ledger._store import LEASE_RENEW_S, LEASE_TTL_S, LEDGER_FILE, LeaseHolder, Ledger, RunLeased
from azrun.ledger._writer import RunLedger

__all__ = [
    "LEASE_RENEW_S",
    "LEASE_TTL_S",
    "LEDGER_FILE",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "LeaseHolder",
    "Ledger",
    "RunLeased",
    "RunLedger",
    "RunRecord",
    "TargetRecord",
    "target_from_json",
    "target_key",
    "target_to_json",
]

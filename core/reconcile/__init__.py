"""Position reconciliation: make the book agree with the broker and explain every difference.

Pure and vectorised: inputs are polars frames (the book's tables and the broker's
positions, executions and open orders), outputs are frames to write (fills, strategy and
leg upserts, order upserts, breaks, a positions snapshot). Nothing here does I/O, so the
same function serves the flow, the tests and the benchmark.

The broker is the truth. The passes, in order, each booking fills so the next sees their effect:

1. executions the book lacks: recorded exactly once (de-duplicated on exec_id), on the
   strategy their orderRef names (its intent, or the ref itself after a crash between submit
   and record); an execution V6 did not place reduces the V6 leg it closes, or goes to an
   EXTERNAL strategy; a V6-looking ref that names nothing is booked EXTERNAL, unresolved;
   an expiry settlement the broker reports (ref "EXPIRY:...") closes the leg EXPIRED;
2. assignment/exercise: option legs the broker no longer has, matched with a stock change
   on their symbol, close ASSIGNED/EXERCISED, and the stock is booked into their strategy
   at the strike (urgent);
3. expiry: option legs past expiry that the broker no longer has close EXPIRED at 0;
4. quantity differences left: allocated to legs by capacity (a V6 leg never beyond its
   intended size nor past zero; EXTERNAL legs absorb the rest; a new EXTERNAL strategy
   takes what is left), each a tagged reconciliation fill;
5. average-price differences: a close-at-book/reopen-at-broker pair of tagged fills;
6. orders: V6 orders the book lacks are recorded, orders the broker no longer works are
   marked filled/cancelled, orders V6 did not place are noted.

Every case writes a break with its resolution; `resolved=False` means the rules could not
explain it and is a circuit-breaker input. Ids (break ids, synthetic exec ids, external
strategy ids, leg indexes) are deterministic functions of the inputs, so re-running after a
crash between two table writes books nothing twice.

Cost: the whole-book scans (leg and contract sums with the one-way price aggregates, the
executions anti-join) run once, collected together; after the executions pass only the
contracts where book and broker disagree (the "focus") go through passes 2-4, and only
contracts (or legs) that both bought and sold are sorted for the average-cost pass. Every
step on a few rows costs a polars call, so the passes skip steps with nothing to do.

Before any of this the broker's numbers are screened (`screen`): an absurd number (not
finite, far beyond what V6 holds or the account could hold) books nothing at all; after pass
4, positions that vanished unexplained and large unknown positions are held, unbooked and
unresolved, until a person acknowledges them (`v6 breaks ack`).

Layout: `model` (inputs, outputs, schemas), `screen` (sanity bounds, what waits for a
person), `stats` (average cost), `views` (the run's state and shared views), `passes`
(passes 1-5, the hold, naming), `orders` (pass 6), `engine` (the run, `reconcile`),
`against_broker` (read, reconcile, write: the one composition with I/O).
"""

from core.reconcile.engine import reconcile
from core.reconcile.model import (
    BOOK_TABLES,
    EXPIRY_REF_PREFIXES,
    BookFrames,
    BrokerFrames,
    ReconcileResult,
    Tolerance,
    executions_since,
    table_schema,
)
from core.reconcile.screen import ReportBounds
from core.reconcile.stats import position_stats

__all__ = [
    "BOOK_TABLES",
    "EXPIRY_REF_PREFIXES",
    "BookFrames",
    "BrokerFrames",
    "ReconcileResult",
    "ReportBounds",
    "Tolerance",
    "executions_since",
    "position_stats",
    "reconcile",
    "table_schema",
]

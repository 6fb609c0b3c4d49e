"""The replay: every version that learned from erased rows is trained again without them.

The version chain is SISA's slices (Bourtoule et al., IEEE S&P 2021): each version trained from its
parent on one watermark range. So erasing exactly means training again only from the first range
that held the customer, starting from the newest version that never saw them (or from the base
model): each tainted version of the serving chain is replayed on the same range, now without the
erased rows, with the same strategy and hyper-parameters (its recorded ``params``), and published
with lineage: its watermark names the erasures it excludes. Towers, ranker, search side and
co-purchase neighbours are all trained again (``updater.build``, as an update does).

When the customer is in the first version there is no clean version to start from: the whole chain
is replayed, or one fresh root is trained on all of its ranges at once, whichever the recorded
timings say costs less (``replay.choice`` says which).

The replayed head is judged by the gate and its verdict recorded, but an erasure cannot be vetoed:
the head serves if it passed; if not, the newest replayed version that passed, or else the newest
clean version, and the erasure's message says so. Then, in one transaction, the pointer moves
(``deployments.action = 'erase'``) and every tainted version is marked ``erased`` with the version
that replaced it; its vectors and neighbours go, and after the commit its artifact directory.
Running APIs swap to the new version as on a promotion.

Requests whose deadline has not passed wait, so that several erasures share one replay; the
first due one takes every pending request along.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, fields

import sqlalchemy as sa

from freshrec.config import Settings, get_settings
from freshrec.db import get_engine
from freshrec.db.partitions import drop_partitions, leftover_versions
from freshrec.erasure.forget import newest_clean
from freshrec.faults import crash_point
from freshrec.ranking.candidates import CandidateConfig
from freshrec.ranking.pair_counts import drop_versions as drop_counts
from freshrec.registry import artifacts
from freshrec.registry.versions import chain, current_version, move_pointer
from freshrec.training import dataset
from freshrec.training.args import GateArguments, TrainingArguments
from freshrec.training.distributed import join
from freshrec.training.ranker import RankerArguments
from freshrec.training.search import SearchArguments
from freshrec.training.watermark import cut_between
from freshrec.updater import gate as gating
from freshrec.updater.build import Parts, build
from freshrec.updater.freshness import UPDATE_LOCK

log = logging.getLogger("freshrec.erasure")


@dataclass
class ReplayOutcome:
    status: str  # done, nothing-due, locked
    erasures: list[int] = field(default_factory=list)
    serving: int | None = None
    replaced: dict[int, int | None] = field(default_factory=dict)  # tainted version -> its replay (None: retired)
    message: str = ""


@dataclass
class _Segment:
    """What one replayed version trains on: the tainted versions it replaces, their joint range, and
    the parameters of the first of them."""

    replaces: list[dict]
    xid_from: str
    xid_to: str

    @property
    def params(self) -> dict:
        return self.replaces[0]["params"]


# A request left 'replaying' was being replayed by a process that died (the replay holds the updater's
# lock, which a dead session releases): it is due at once, and takes the pending ones along.
_DUE = """
SELECT id FROM erasures WHERE state IN ('pending', 'failed', 'replaying')
  AND (:force OR EXISTS (SELECT 1 FROM erasures
                         WHERE state = 'replaying' OR (state IN ('pending', 'failed') AND deadline <= now())))
ORDER BY id"""


def due_erasures(conn, force: bool = False) -> list[int]:
    """Every pending (or failed, or abandoned mid-replay) request, once the first deadline among them has
    passed (or ``force``). Without the updater's lock a 'replaying' one may be another process's, running:
    ``run_due`` takes the lock first and answers ``locked`` then."""
    return [r[0] for r in conn.execute(sa.text(_DUE), {"force": force})]


def run_due(settings: Settings | None = None, force: bool = False, store=None) -> ReplayOutcome:
    """Replay for every due erasure, under the updater's lock (an update and a replay never overlap)."""
    settings = settings or get_settings()
    engine = get_engine(settings)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as lock_conn:
        if not lock_conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": UPDATE_LOCK}).scalar():
            return ReplayOutcome("locked", message="an update (or another replay) is running; try again after it")
        try:
            with engine.connect() as conn:  # partitions of versions erased by a run that died before dropping them
                leftover = leftover_versions(conn)
            drop_partitions(engine, leftover)
            with engine.begin() as conn:
                due = due_erasures(conn, force)
                if due:
                    conn.execute(sa.text("UPDATE erasures SET state = 'replaying' WHERE id = ANY(:e)"), {"e": due})
            if not due:
                return ReplayOutcome("nothing-due", message="no erasure is due")
            if store is None:
                from freshrec.features import open_store

                store = open_store(settings)
            try:
                return _replay(engine, settings, store, due)
            except Exception as err:
                with engine.begin() as conn:
                    conn.execute(sa.text("UPDATE erasures SET state = 'failed', message = :m WHERE id = ANY(:e)"),
                                 {"e": due, "m": f"replay failed: {type(err).__name__}: {err}"[:2000]})
                raise
        finally:
            lock_conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": UPDATE_LOCK})


def _arguments(cls, values: dict | None):
    """A dataclass from recorded parameters: fields a newer code added take their defaults."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in (values or {}).items() if k in names})


def _cost(row: dict) -> float:
    return float((row.get("timings") or {}).get("total_s") or 0.0)


def _plan(tainted_chain: list[dict], clean: int | None) -> tuple[list[_Segment], str, dict]:
    """The segments to train, the choice made and the estimates it was made on."""
    each = [_Segment([r], r["xid_from"], r["xid_to"]) for r in tainted_chain]
    if clean is not None or len(tainted_chain) < 2:
        return each, "chain", {}
    first = tainted_chain[0]
    rows = sum(r["row_count"] for r in tainted_chain)
    # A version's recorded cost, scaled to all the chain's rows: what one fresh root would take.
    chain_s = sum(_cost(r) for r in tainted_chain)
    root_s = _cost(first) * rows / max(first["row_count"], 1)
    estimates = {"chain_s": round(chain_s, 1), "fresh_root_s": round(root_s, 1), "rows": rows}
    if root_s and root_s < chain_s:
        return [_Segment(tainted_chain, first["xid_from"], tainted_chain[-1]["xid_to"])], "fresh root", estimates
    return each, "chain", estimates


def choose_serving(head: int | None, passed: list[int], clean: int | None, verdicts: dict) -> tuple[int | None, str]:
    """The version to serve after a replay, and why: an erasure cannot be vetoed, but a head that
    failed its gate does not serve while a version without the rows that passed can."""
    if head in passed or head == clean:
        return head, f"the replayed head, version {head}, passed the gate"
    failed = f"the replayed head, version {head}, failed the gate ({verdicts.get(head)})"
    if passed:
        return passed[-1], f"{failed}: version {passed[-1]}, the newest replay that passed, serves"
    if clean is not None:
        return clean, f"{failed}: version {clean}, the newest that never saw the rows, serves"
    return head, f"{failed} and no version without the rows passed: it serves anyway (an erasure cannot be vetoed)"


def _replay(engine, settings: Settings, store, due: list[int]) -> ReplayOutcome:
    started = time.perf_counter()
    with engine.connect() as conn:
        tainted = {r[0] for r in conn.execute(
            sa.text("SELECT DISTINCT version FROM erasure_proof WHERE erasure_id = ANY(:e)"), {"e": due})}
        current = current_version(conn)
        # The chain to train again: the serving one, or, where ``now`` moved the pointer back to a clean
        # ancestor, the one that served when the request came (its tainted part is replayed all the same).
        heads = [r[0] for r in conn.execute(sa.text(
            "SELECT tainted_head FROM erasures WHERE id = ANY(:e) AND tainted_head IS NOT NULL ORDER BY tainted_head"),
            {"e": due}) if r[0] in tainted]
        start = heads[-1] if current not in tainted and heads else current
        serving_chain = chain(conn, start) if start is not None else []
        excludes = {v: list(x) for v, x in conn.execute(
            sa.text("SELECT version, excludes_erasures FROM watermarks WHERE version = ANY(:v)"), {"v": sorted(tainted)})}
        clean = newest_clean(conn, start, tainted)
        root = artifacts.database_folder(conn, settings.artifacts_root)
    tainted_chain = [r for r in serving_chain if r["version"] in tainted]
    segments, choice, estimates = _plan(tainted_chain, clean)
    log.info(f"erasures {due}: {len(tainted)} versions learned from the rows; replaying {len(tainted_chain)} of the "
             f"serving chain from {clean or 'the base model'} ({choice})")

    replaced: dict[int, int | None] = {v: None for v in tainted}
    parent, verdicts, passed = clean, {}, []
    # The range of a version whose every row was erased: the next one takes it, with the erasures its
    # watermark excluded (else the proof would find the range without them).
    carried: str | None = None
    carried_excludes: set[int] = set()
    for segment in segments:
        cut = cut_between(engine, carried or segment.xid_from, segment.xid_to)
        if cut.row_count == 0:
            carried = cut.xid_from
            for r in segment.replaces:
                replaced[r["version"]] = parent
                carried_excludes.update(excludes.get(r["version"], []))
            continue
        carried = None
        params = segment.params
        args = _arguments(TrainingArguments, params)
        gate = _arguments(GateArguments, params.get("gate"))
        parts = Parts(_arguments(RankerArguments, params.get("ranker")), _arguments(CandidateConfig, params.get("candidates")),
                      _arguments(SearchArguments, params.get("search")))
        excluded = sorted(set(due).union(carried_excludes, *(excludes.get(r["version"], []) for r in segment.replaces)))
        carried_excludes = set()
        t0, timings = time.perf_counter(), {}
        data = dataset.build(engine, store, cut, args)
        slices = gating.slice_baskets(data.gate_rows, data.guard_rows, data.train_rows, gate.max_eval_baskets)
        world = join(args.device)
        try:
            built = build(world, engine, settings, store, root, parent, cut, data, slices, args, gate, parts,
                          segment.replaces[0]["base_model"], lambda verdict: "candidate", t0, timings,
                          excludes=tuple(excluded))
        finally:
            world.close()
        for r in segment.replaces:
            replaced[r["version"]] = built.version
        verdicts[built.version] = built.verdict.reason
        if built.verdict.status != "failed":  # passed, skipped (no gate), or too little evidence to judge
            passed.append(built.version)
        parent = built.version
        log.info(f"replayed {[r['version'] for r in segment.replaces]} as version {built.version} "
                 f"({cut.row_count:,} rows; gate {built.verdict.reason})")

    head = parent if tainted_chain else current  # nothing of the chain to train: the serving version stays
    serving, why = choose_serving(head, passed, clean, verdicts) if tainted_chain else (
        current, "the serving version never learned from the erased rows")
    seconds = time.perf_counter() - started
    record = {"choice": choice if tainted_chain else "none", "estimates": estimates, "clean": clean, "head": head,
              "replaced": {str(k): v for k, v in sorted(replaced.items())}, "verdicts": verdicts,
              "versions_trained": len(verdicts), "seconds": round(seconds, 2)}
    message = (f"erasures {', '.join(map(str, due))}: {len(tainted)} versions retired, {len(verdicts)} trained "
               f"again ({record['choice']}) in {seconds:,.0f} s; {why}")
    serving, uris = _retire(engine, store, due, tainted, replaced, serving, current, record, message)
    drop_partitions(engine, sorted(tainted))
    for uri in uris:
        try:
            artifacts.remove(uri)
        except OSError as err:  # the erasure is done; an artifact left behind is swept by the next update
            log.warning(f"could not delete the erased artifact {uri}: {err}")
    log.info(message)
    return ReplayOutcome("done", due, serving, replaced, message)


def _retire(engine, store, due: list[int], tainted: set[int], replaced: dict, serving: int | None,
            started_from: int | None, record: dict, message: str) -> tuple[int | None, list[str]]:
    """One transaction: the pointer to ``serving``, the tainted versions ``erased`` (their neighbours
    dropped), the erasures done. Returns the version serving and the artifact locations to delete.

    The pointer moves by compare-and-set, as a publish does: if an operator moved it during the replay
    to a version that never saw the rows, it stays there."""
    from freshrec.features import delete_online_neighbours, neighbour_keys

    versions = sorted(tainted)
    keys = neighbour_keys(engine, versions)  # read before the rows go: they name the items
    with engine.begin() as conn:
        conn.execute(sa.text("LOCK TABLE deployments IN SHARE ROW EXCLUSIVE MODE"))
        found = current_version(conn)
        if found != started_from and found is not None and found not in tainted:
            message += f"; the pointer moved to version {found} during the replay, which never saw the rows: it stays"
            record["pointer_moved_to"], serving = found, found
        elif serving is not None and serving != found:
            move_pointer(conn, serving, "erase", "erasure", message[:500])
        if serving is not None:
            conn.execute(sa.text("UPDATE model_versions SET status = 'promoted' WHERE version = :v"), {"v": serving})
        uris = [r[0] for r in conn.execute(sa.text("SELECT artifact_uri FROM model_versions WHERE version = ANY(:v)"),
                                           {"v": versions})]
        for version in versions:
            conn.execute(sa.text("UPDATE model_versions SET status = 'erased', replaced_by = :by WHERE version = :v"),
                         {"v": version, "by": replaced.get(version)})
        conn.execute(sa.text("DELETE FROM item_neighbours WHERE version = ANY(:v)"), {"v": versions})
        drop_counts(conn, versions)
        conn.execute(sa.text("UPDATE erasures SET state = 'done', finished_at = now(), clean_version = :c, "
                             "serving_version = :s, replay = CAST(:r AS jsonb), message = :m WHERE id = ANY(:e)"),
                     {"c": record["clean"], "s": serving, "r": json.dumps(record), "m": message, "e": due})
        crash_point("erasure-retire")
    delete_online_neighbours(engine, store, keys)  # after the commit: the versions serving until it keep theirs
    return serving, uris

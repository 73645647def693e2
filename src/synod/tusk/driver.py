"""Drivers: untrusted, stateless carriers between passive Tusk cores.

Theory of operation (the passive-core model of sleepyseal applied to the Narwhal core
design of Narwhal & Tusk).
Cores never contact each other; a driver does every transfer Narwhal's primaries would
do themselves:

- it polls each core with a `CoreRequest` (`Call`), learning the core's round, its own
  header for that round and which certificates it holds;
- it carries every header it learnt to the other cores and collects their votes;
  a quorum of votes (by weight) on one header becomes a `Certificate`;
- it carries certificates to the cores that lack them, lowest rounds first, and the
  parents a core reports missing (to a core that voted for a header, as the header's
  digest and the votes: the batch does not travel twice); it fetches certificates it
  lacks from the cores that list them.

A driver holds no secret and nothing needed for safety: every item it carries is
checked by the receiving core, so a driver may crash, restart empty, run beside others,
or be Byzantine (`ByzantineDriver`: withholds, reorders, replays, mixes rounds, tampers)
without any effect but on liveness.  Liveness needs one honest driver that keeps
relaying.  The driver keeps at most one request in flight per core and re-polls idle
cores every `poll_interval_ms`; what it remembers is soft state, pruned to a window of
recent rounds.

Memory stays bounded whatever the cores send.  A header is kept for votes only if its
round lies within `window_rounds` of the highest certified round the driver holds, on
either side: a Byzantine core cannot park signed headers of far-future rounds (honest
headers are at most one round above the highest certificate).  And at most
`window_rounds + 2` headers per creator wait for votes, which is every round an honest
creator can have pending (one header a round, from the pruning floor up to one round
above the highest certificate); when an equivocating creator exceeds it, its lowest
rounds are kept, since those are the ones honest cores can still certify.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from synod.core import Call, CallFailed, Response, SetTimer, Started, Step, TimerFired
from synod.crypto import NodeId, blake2b
from synod.quorum.committee import Committee
from synod.tusk.messages import (
    MAX_BATCH_BYTES,
    MAX_CERTIFICATES_PER_MESSAGE,
    MAX_HEADERS_PER_REQUEST,
    MAX_WANTED,
    ZERO_DIGEST,
    Certificate,
    CertifiedDigest,
    CheckpointCertificate,
    CheckpointVote,
    CoreAnswer,
    CoreRequest,
    Header,
    LogAnswer,
    LogRecord,
    LogRequest,
    LogWanted,
    Refusal,
    RefusalReason,
    Vote,
    VoteSignature,
    header_signature_valid,
    make_certificate,
    request_digest,
)

POLL_TIMER = "tusk-driver-poll"

_REQUEST_BATCH_BYTES = 2 * 1024 * 1024
"""Transactions carried in one request: well under the 4 MiB frame cap."""

_GIVE_UP_REASONS = frozenset(RefusalReason) - {RefusalReason.MISSING_PARENTS}

CHECKPOINT_VOTES_PER_CORE = 2
"""Checkpoint votes kept per core, its latest ones: enough for cores one checkpoint
apart to meet on a statement, and a Byzantine core's votes cannot crowd out others'."""

BLOCK_RETRY_POLLS = 10
"""An item a core refused for missing parents is carried to it again after this many
poll periods even when this driver cannot supply the parents: the core may have got
them from another driver, or collected their rounds, and a parent that exists nowhere
(a made-up weak parent) must not block the item, and all it leads to, for good.  A retry
costs the core a parent lookup (checked before any signature), once a poll period times
this number (0.5 s at the default 50 ms)."""


@dataclass(slots=True)
class _CoreView:
    """What a driver believes about one core (soft state: wrong only costs liveness)."""

    round: int = 0
    known: set[bytes] = field(default_factory=set)
    voted: set[bytes] = field(default_factory=set)
    blocked: dict[bytes, set[bytes]] = field(default_factory=dict)
    blocked_at: dict[bytes, int] = field(default_factory=dict)  # the poll count then
    refused: set[bytes] = field(default_factory=set)
    lists: set[bytes] = field(default_factory=set)
    asked: set[bytes] = field(default_factory=set)
    in_flight: int | None = None
    polled: bool = False
    header_held: bytes = ZERO_DIGEST  # the core's latest own header this driver has
    holds: set[bytes] = field(default_factory=set)  # headers it voted for or made
    checkpoint_held: bytes = ZERO_DIGEST  # the statement of its latest checkpoint vote
    late_held: bytes = ZERO_DIGEST  # its late own header this driver has
    checkpoint_carried_at: int | None = None  # the poll count when last carried one
    log_wanted: LogWanted | None = None  # the gap of its delivery log, as it last said
    log_records: tuple[LogRecord, ...] = ()  # fetched for it, to carry next
    log_source: int = 0  # which other core to fetch its records from (in turn)
    log_fetching: bool = False
    log_carried_end: int | None = None  # the gap's end when records were last carried
    log_misses: int = 0  # fetches in a row that found no record (busy answers aside)
    # Creators whose headers or certificates it refused as of another committee context
    # (at most one entry per member: its settings differ from theirs).
    other_context: set[bytes] = field(default_factory=set)


@dataclass(slots=True)
class _Pending:
    header: Header
    votes: dict[bytes, Vote] = field(default_factory=dict)


class Driver:
    """An honest driver for the cores of `committee` (see the module docstring)."""

    def __init__(
        self,
        name: str,
        committee: Committee,
        *,
        poll_interval_ms: int = 50,
        window_rounds: int = 40,
        max_certificates_per_request: int = 16,
        network: bytes = b"",
    ) -> None:
        if poll_interval_ms < 1 or window_rounds < 2:
            raise ValueError("poll_interval_ms must be positive and window_rounds at least 2")
        if not 1 <= max_certificates_per_request <= MAX_CERTIFICATES_PER_MESSAGE:
            raise ValueError(
                f"max_certificates_per_request must be 1..{MAX_CERTIFICATES_PER_MESSAGE}"
            )
        self.name = name
        self.committee = committee
        self.network = network
        """The network id whose signatures this driver accepts (`TuskConfig.network`)."""
        self.poll_interval_ms = poll_interval_ms
        self.window_rounds = window_rounds
        self.max_certificates_per_request = max_certificates_per_request
        self.max_pending_per_creator = window_rounds + 2
        """Headers of one creator kept for votes at most (see the module docstring)."""
        self._node_id = NodeId(blake2b(name.encode(), person=b"synod-tusk-drv"))
        self._certificates: dict[bytes, Certificate] = {}
        self._pending: dict[bytes, _Pending] = {}
        self._views: dict[bytes, _CoreView] = {core: _CoreView() for core in committee.members}
        self._requests: dict[int, tuple[bytes, CoreRequest, bytes]] = {}
        self._next_request_id = 1
        self._missing: set[bytes] = set()
        self._highest_round = 0
        self._pruned_below = 0
        self._ordered: list[tuple[bytes, Certificate]] | None = None  # by (round, creator)
        self._polls = 0
        # core -> its latest checkpoint votes as (sequence, statement digest, signature)
        self._checkpoint_votes: dict[bytes, list[tuple[int, bytes, bytes]]] = {}
        self._checkpoint: CheckpointCertificate | None = None
        # request id -> (the core asked, the core whose gap it is for)
        self._log_fetches: dict[int, tuple[bytes, bytes]] = {}

    @property
    def node_id(self) -> NodeId:
        """A name for this driver (not a key: a driver signs nothing)."""
        return self._node_id

    @property
    def highest_round(self) -> int:
        """The highest round of a certificate this driver holds."""
        return self._highest_round

    def pending_headers(self) -> tuple[Header, ...]:
        """Headers this driver collects votes on (soft state, bounded: see the module
        docstring)."""
        return tuple(pending.header for pending in self._pending.values())

    def core_rounds(self) -> dict[bytes, int]:
        """The round each core last reported (0: no answer yet)."""
        return {core: view.round for core, view in self._views.items()}

    def certified_rounds(self) -> dict[bytes, int]:
        """The highest round of a certificate of each core's header that this driver
        holds (0: none within its window).  A core whose round keeps up while this
        falls behind is starved: its headers are not getting certified."""
        highest = dict.fromkeys(self._views, 0)
        for certificate in self._certificates.values():
            creator = certificate.header.creator
            highest[creator] = max(highest.get(creator, 0), certificate.header.round)
        return highest

    def metrics(self) -> dict[str, int]:
        """Gauges for monitoring (`synod tusk driver --metrics-port`): the highest
        certified round, certificates and headers held, requests in flight."""
        return {
            "highest_round": self.highest_round,
            "certificates": len(self._certificates),
            "pending_headers": len(self._pending),
            "requests_in_flight": len(self._requests),
            "checkpoint_sequence": self._checkpoint.statement.sequence if self._checkpoint else 0,
        }

    @property
    def checkpoint(self) -> CheckpointCertificate | None:
        """The latest checkpoint this driver holds signatures of f + 1 cores for."""
        return self._checkpoint

    def certificate_count(self) -> int:
        """Certificates this driver holds (soft state, within its window of rounds)."""
        return len(self._certificates)

    # ------------------------------------------------------------ inputs

    def handle(self, event: Any, now_ms: int) -> Step:
        """React to a start, a poll timer, an answer or a failed call."""
        step = Step()
        if isinstance(event, Started):
            self._reset_flights()
            self._poll_idle(step, everyone=True)
            step.timers.append(SetTimer(POLL_TIMER, self.poll_interval_ms))
        elif isinstance(event, TimerFired) and event.name == POLL_TIMER:
            self._polls += 1
            for view in self._views.values():
                view.asked.clear()  # ask again, at the poll rate, for what is still missing
            self._poll_idle(step, everyone=True)
            step.timers.append(SetTimer(POLL_TIMER, self.poll_interval_ms))
        elif isinstance(event, Response) and event.request_id in self._log_fetches:
            self._on_log_answer(event)
            self._poll_idle(step, everyone=False)
        elif isinstance(event, Response):
            self._on_response(event)
            self._poll_idle(step, everyone=False)
        elif isinstance(event, CallFailed) and event.request_id in self._log_fetches:
            self._log_fetch_ended(event.request_id, event.server, found=False)
        elif (
            isinstance(event, CallFailed)
            and self._take_request(event.request_id, event.server) is not None
        ):
            self._views[event.server].in_flight = None
        return step

    def _reset_flights(self) -> None:
        self._requests.clear()
        self._log_fetches.clear()
        for view in self._views.values():
            view.in_flight = None
            view.log_fetching = False

    def _poll_idle(self, step: Step, *, everyone: bool) -> None:
        for core, view in self._views.items():
            if everyone:
                # At most one fetch per poll period for each core with a gap: a core
                # claiming one forever (a Byzantine one) costs each driver one answer
                # (about 1 MiB at most) per period, no more.
                self._fetch_log_for(core, view, step)
            if view.in_flight is not None:
                continue
            request = self._request_for(core)
            if everyone or not view.polled or _carries_something(request):
                self._call(core, request, step)

    def _call(self, core: bytes, request: CoreRequest, step: Step) -> None:
        request = self._tamper(core, request)
        request_id = self._next_request_id
        self._next_request_id += 1
        self._requests[request_id] = (core, request, request_digest(request))
        view = self._views[core]
        view.in_flight = request_id
        view.polled = True
        step.outgoing.append(Call(to=NodeId(core), request_id=request_id, body=request))

    def _tamper(self, core: bytes, request: CoreRequest) -> CoreRequest:
        """Hook for `ByzantineDriver`: an honest driver sends what it built."""
        return request

    # ------------------------------------------------------------ requests

    # ------------------------------------------------------------ filling gaps

    def _fetch_log_for(self, core: bytes, view: _CoreView, step: Step) -> None:
        """Ask another core, in turn, for the records just below the end of `core`'s
        gap (at a poll, one fetch in flight per core with a gap; none while records
        wait to be carried to it)."""
        wanted = view.log_wanted
        if wanted is None or view.log_fetching or view.log_records:
            return
        others = [member for member in self.committee.members if member != core]
        if not others:
            return
        source = others[view.log_source % len(others)]
        request_id = self._next_request_id
        self._next_request_id += 1
        self._log_fetches[request_id] = (source, core)
        view.log_fetching = True
        request = LogRequest(end=wanted.end)
        step.outgoing.append(Call(to=NodeId(source), request_id=request_id, body=request))

    def _log_fetch_ended(
        self, request_id: int, server: bytes, *, found: bool, busy: bool = False
    ) -> None:
        source, core = self._log_fetches[request_id]
        if source != server:
            return  # a stray reply: the fetch stays in flight until its own ends
        del self._log_fetches[request_id]
        view = self._views[core]
        view.log_fetching = False
        if found:
            view.log_misses = 0
            return
        view.log_source += 1  # that core does not hold them (or lied): try the next
        if not busy:
            view.log_misses += 1

    def unserved_gaps(self) -> dict[bytes, tuple[int, int]]:
        """The cores whose log gap ([first, end)) no other core served in a whole turn
        of asking each (busy answers aside): the others may have pruned those positions
        at a checkpoint this core has not reached yet (it gives them up at that one), or
        hold only records written before records carried their proof, or the
        committee's honest cores are unreachable.  Soft state, for warnings: a
        Byzantine core can only add misses."""
        others = len(self.committee.members) - 1
        return {
            core: (view.log_wanted.first, view.log_wanted.end)
            for core, view in self._views.items()
            if view.log_wanted is not None and others > 0 and view.log_misses >= others
        }

    def _on_log_answer(self, event: Response) -> None:
        """Keep the consecutive records from the gap's end down that a core sent, to
        carry them to the core with the gap; the core checks each against its chain
        (a driver cannot tell good records from forged ones, and need not)."""
        source, core = self._log_fetches[event.request_id]
        answer = event.body
        wanted = self._views[core].log_wanted
        records: list[LogRecord] = []
        if (
            event.server == source
            and isinstance(answer, LogAnswer)
            and wanted is not None
            and answer.end == wanted.end
        ):
            positions = range(wanted.end - 1, wanted.first - 1, -1)
            for expected, record in zip(positions, answer.records, strict=False):
                if record.sequence != expected:
                    break
                records.append(record)
        busy = isinstance(answer, LogAnswer) and answer.busy
        self._log_fetch_ended(event.request_id, event.server, found=bool(records), busy=busy)
        if records and event.server == source:
            self._views[core].log_records = tuple(records)

    def _learn_log_wanted(self, view: _CoreView, wanted: LogWanted | None) -> None:
        """A core's gap as its answer states it: records carried that did not move its
        end were refused (forged by the core they came from, or by a driver on the
        way), so the next fetch asks another core."""
        if wanted is not None and view.log_carried_end == wanted.end:
            view.log_source += 1
        view.log_carried_end = None
        if wanted is None or view.log_wanted is None or view.log_wanted.end != wanted.end:
            view.log_records = ()  # fetched for an end that moved: useless now
            view.log_misses = 0
        view.log_wanted = wanted

    # ------------------------------------------------------------ requests

    def _request_for(self, core: bytes) -> CoreRequest:
        view = self._views[core]
        since = max(1, view.round - 1)
        log_records, view.log_records = view.log_records, ()
        if log_records and view.log_wanted is not None:
            view.log_carried_end = view.log_wanted.end
        reserved_bytes = sum(len(t) for record in log_records for t in record.transactions)
        chosen = self._certificates_for(view, since, reserved_bytes)
        # A core that voted for (or made) a header gets its certificate without the batch.
        certificates = [c for digest, c in chosen if digest not in view.holds]
        certified = [
            CertifiedDigest(header_digest=digest, votes=c.votes)
            for digest, c in chosen
            if digest in view.holds
        ]
        carried = {digest for digest, _ in chosen} | view.known
        budget_bytes = _REQUEST_BATCH_BYTES - reserved_bytes
        budget_bytes -= sum(c.header.batch_bytes() for c in certificates)
        headers: list[Header] = []
        for digest, pending in self._pending.items():
            if len(headers) == MAX_HEADERS_PER_REQUEST:
                break
            if digest in view.voted or core in pending.votes:
                continue
            if not self._unblocked(view, digest, carried):
                continue
            budget_bytes -= pending.header.batch_bytes()
            if headers and budget_bytes < 0:
                break
            headers.append(pending.header)
        wanted = [
            digest
            for digest in sorted(view.lists | self._missing)
            if digest not in view.asked and digest not in self._certificates
        ][:MAX_WANTED]
        view.asked.update(wanted)
        return CoreRequest(
            certificates=tuple(certificates),
            headers=tuple(headers),
            wanted=tuple(wanted),
            since_round=since,
            header_held=view.header_held,
            certified=tuple(certified),
            checkpoint_held=view.checkpoint_held,
            checkpoint=self._checkpoint_for(view),
            late_held=view.late_held,
            committee_round=self._highest_round,
            log_records=log_records,
        )

    def _checkpoint_for(self, view: _CoreView) -> CheckpointCertificate | None:
        """The checkpoint, for a core whose round is below its floor (it cannot catch up
        through certificates: the others may have collected what it needs), at most
        once every `BLOCK_RETRY_POLLS` polls (a core that does not install it, being
        misconfigured or Byzantine, does not get its size with every request)."""
        checkpoint = self._checkpoint
        if checkpoint is None or not 0 < view.round < checkpoint.statement.floor_round:
            return None
        last = view.checkpoint_carried_at
        if last is not None and self._polls - last < BLOCK_RETRY_POLLS:
            return None
        view.checkpoint_carried_at = self._polls
        return checkpoint

    def _certificates_for(
        self, view: _CoreView, since: int, reserved_bytes: int = 0
    ) -> list[tuple[bytes, Certificate]]:
        """What to carry to a core, lowest rounds first: the certificates of its recent
        rounds and the parents it asked for, then, with what room is left, older ones it
        has not shown it holds.  Those are the late certificates (made after the other
        cores had moved on, as a slow core's are): carried, they become weak parents of
        the cores' next headers and get delivered; left with the driver, nobody would
        ever name them."""
        if self._ordered is None:
            self._ordered = sorted(
                self._certificates.items(),
                key=lambda item: (item[1].header.round, item[1].header.creator),
            )
        wanted_as_parents = set().union(*view.blocked.values())
        recent = [
            item
            for item in self._ordered
            if item[1].header.round >= since or item[0] in wanted_as_parents
        ]
        late = [item for item in self._ordered if item[1].header.round < since]
        chosen: list[tuple[bytes, Certificate]] = []
        self._choose(view, recent, chosen, reserved_bytes)
        self._choose(view, late, chosen, reserved_bytes)
        chosen.sort(key=lambda item: item[1].header.round)
        return chosen

    def _choose(
        self,
        view: _CoreView,
        candidates: list[tuple[bytes, Certificate]],
        chosen: list[tuple[bytes, Certificate]],
        reserved_bytes: int = 0,
    ) -> None:
        chosen_digests = {digest for digest, _ in chosen}
        budget_bytes = _REQUEST_BATCH_BYTES - reserved_bytes - sum(
            c.header.batch_bytes() for d, c in chosen if d not in view.holds
        )
        for digest, certificate in candidates:
            if len(chosen) == self.max_certificates_per_request:
                break
            if digest in view.known or digest in view.refused or digest in chosen_digests:
                continue
            if not self._unblocked(view, digest, view.known | chosen_digests):
                continue
            if digest not in view.holds:
                budget_bytes -= certificate.header.batch_bytes()
            if chosen and budget_bytes < 0:
                break
            chosen.append((digest, certificate))
            chosen_digests.add(digest)

    def _unblocked(self, view: _CoreView, digest: bytes, available: set[bytes]) -> bool:
        """Whether `digest` may go to the core: it reported no missing parents for it,
        they are all `available` now, or the block has lasted `BLOCK_RETRY_POLLS`."""
        missing = view.blocked.get(digest)
        if missing is None or missing <= available:
            return True
        return self._polls - view.blocked_at.get(digest, self._polls) >= BLOCK_RETRY_POLLS

    # ------------------------------------------------------------ answers

    def _take_request(
        self, request_id: int, server: bytes
    ) -> tuple[bytes, CoreRequest, bytes] | None:
        """The request `request_id` sent to `server`, forgotten now.  An answer that names
        another server (a stray reply to an earlier life of this driver, which numbered
        its requests from 1 too) leaves the request in flight."""
        sent = self._requests.get(request_id)
        if sent is None or sent[0] != server:
            return None
        del self._requests[request_id]
        return sent

    def _on_response(self, event: Response) -> None:
        sent = self._take_request(event.request_id, event.server)
        if sent is None:
            return
        core, request, digest = sent
        view = self._views[core]
        view.in_flight = None
        answer = event.body
        if not isinstance(answer, CoreAnswer) or answer.core != core:
            return
        if answer.request_digest != digest or not answer.has_valid_signature(self.network):
            return
        view.round = max(view.round, answer.round)
        self._learn_log_wanted(view, answer.log_wanted)
        self._learn_refusals(view, request, answer)
        # Certificates first: they raise the highest round that bounds which headers
        # are kept, so a driver that restarted empty keeps a core's current header.
        for certificate in answer.certificates:
            self._learn_certificate(certificate)
        self._learn_own_headers(view, core, answer)
        for vote in answer.votes:
            self._learn_vote(vote)
        if answer.checkpoint is not None:
            self._learn_checkpoint_vote(view, core, answer.checkpoint)
        for ref in answer.known:
            view.known.add(ref.digest)
            view.blocked.pop(ref.digest, None)
            if ref.digest not in self._certificates:
                view.lists.add(ref.digest)
        self._prune()

    def _learn_own_headers(self, view: _CoreView, core: bytes, answer: CoreAnswer) -> None:
        """The core's header of its round, and its late one (an own header of an earlier
        round nobody certified): collect votes on them, and note that the core holds
        them (their certificates go to it by digest) and that this driver does."""
        if answer.header is not None:
            held = self._learn_header(answer.header)
            if answer.header.creator == core:
                view.header_held = held
                if held != ZERO_DIGEST:
                    view.holds.add(held)
        if answer.late_header is not None and answer.late_header.creator == core:
            view.late_held = self._learn_header(answer.late_header)
            if view.late_held != ZERO_DIGEST:
                view.holds.add(view.late_held)

    def context_refusals(self) -> dict[bytes, frozenset[bytes]]:
        """Each core that refused headers or certificates as of another committee
        context -> their creators: its settings (`network_id`, members, `gc_depth`,
        `kept_commits`) differ from theirs, so they will never order together.  From
        the cores' signed answers; for warnings."""
        return {
            core: frozenset(view.other_context)
            for core, view in self._views.items()
            if view.other_context
        }

    def _learn_refusals(self, view: _CoreView, request: CoreRequest, answer: CoreAnswer) -> None:
        refused = {refusal.digest: refusal for refusal in answer.refusals}
        if any(refusal.reason == RefusalReason.OTHER_COMMITTEE for refusal in answer.refusals):
            self._learn_other_context(view, request, refused)
        carried = [certificate.header.digest() for certificate in request.certificates]
        carried += [item.header_digest for item in request.certified]
        for digest in carried:
            refusal = refused.get(digest)
            if refusal is None or refusal.reason == RefusalReason.ALREADY_KNOWN:
                view.known.add(digest)
                view.blocked.pop(digest, None)
            elif refusal.reason == RefusalReason.HEADER_UNKNOWN:
                view.holds.discard(digest)  # a restarted core: carry it in full
            elif refusal.reason == RefusalReason.MISSING_PARENTS:
                self._block(view, digest, refusal.missing)
            else:
                view.refused.add(digest)  # carrying it again would change nothing
        for header in request.headers:
            digest = header.digest()
            refusal = refused.get(digest)
            if refusal is None:
                continue
            if refusal.reason in _GIVE_UP_REASONS:
                view.voted.add(digest)
            else:
                self._block(view, digest, refusal.missing)

    def _learn_other_context(
        self, view: _CoreView, request: CoreRequest, refused: dict[bytes, Refusal]
    ) -> None:
        headers = [certificate.header for certificate in request.certificates]
        for header in [*headers, *request.headers]:
            refusal = refused.get(header.digest())
            if refusal is not None and refusal.reason == RefusalReason.OTHER_COMMITTEE:
                view.other_context.add(bytes(header.creator))

    def _block(self, view: _CoreView, digest: bytes, missing: tuple[bytes, ...]) -> None:
        view.blocked[digest] = set(missing)
        view.blocked_at[digest] = self._polls
        self._missing.update(d for d in missing if d not in self._certificates)

    def _learn_checkpoint_vote(self, view: _CoreView, core: bytes, vote: CheckpointVote) -> None:
        """Keep a core's checkpoint vote (its latest `CHECKPOINT_VOTES_PER_CORE`); once
        cores of weight f + 1 signed one statement, that is the checkpoint to carry.
        A vote is kept as its statement's digest: only the statement that completes a
        checkpoint is kept whole (in it)."""
        statement = vote.statement
        digest = statement.digest()
        view.checkpoint_held = digest
        current = self._checkpoint
        if vote.signer != core or (current and statement.sequence <= current.statement.sequence):
            return
        kept = self._checkpoint_votes.setdefault(core, [])
        if any(other_digest == digest for _, other_digest, _ in kept):
            return
        if not vote.has_valid_signature(self.network):
            return
        kept.append((statement.sequence, digest, vote.signature))
        kept.sort()
        del kept[:-CHECKPOINT_VOTES_PER_CORE]
        signatures = sorted(
            (
                VoteSignature(voter=signer, signature=signature)
                for signer, votes in self._checkpoint_votes.items()
                for _, other_digest, signature in votes
                if other_digest == digest
            ),
            key=lambda signature: signature.voter,
        )
        if self.committee.reaches_validity(signature.voter for signature in signatures):
            self._checkpoint = CheckpointCertificate(
                statement=statement, signatures=tuple(signatures)
            )

    def _learn_header(self, header: Header) -> bytes:
        """Keep `header` to collect votes on it; its digest if this driver now holds it
        (pending or certified), otherwise `ZERO_DIGEST`."""
        digest = header.digest()
        if digest in self._pending or digest in self._certificates:
            return digest
        if header.creator not in self.committee or header.batch_bytes() > MAX_BATCH_BYTES:
            return ZERO_DIGEST  # no core votes for a larger batch; it would not fit a request
        if not header_signature_valid(header, digest, self.network):
            return ZERO_DIGEST
        # Far behind, or far ahead of any certificate (no honest core can vote yet).
        if abs(header.round - self.highest_round) > self.window_rounds:
            return ZERO_DIGEST
        if not self._make_room_for(header):
            return ZERO_DIGEST
        self._pending[digest] = _Pending(header=header)
        return digest

    def _make_room_for(self, header: Header) -> bool:
        """Whether `header` may join the pending headers of its creator, evicting that
        creator's highest-round pending header when the cap is reached and `header` is of
        a lower round (the lowest rounds are kept)."""
        mine = [
            (pending.header.round, digest)
            for digest, pending in self._pending.items()
            if pending.header.creator == header.creator
        ]
        if len(mine) < self.max_pending_per_creator:
            return True
        highest_round, highest_digest = max(mine)
        if header.round >= highest_round:
            return False
        del self._pending[highest_digest]
        return True

    def _learn_vote(self, vote: Vote) -> None:
        pending = self._pending.get(vote.header_digest)
        if pending is None or vote.voter in pending.votes or vote.voter not in self.committee:
            return
        if vote.round != pending.header.round or vote.creator != pending.header.creator:
            return
        if not vote.has_valid_signature(self.network):
            return
        pending.votes[vote.voter] = vote
        self._views[vote.voter].voted.add(vote.header_digest)
        self._views[vote.voter].holds.add(vote.header_digest)
        if self.committee.reaches_quorum(pending.votes):
            certificate = make_certificate(pending.header, list(pending.votes.values()))
            del self._pending[vote.header_digest]
            self._add_certificate(vote.header_digest, certificate)

    def _learn_certificate(self, certificate: Certificate) -> None:
        digest = certificate.header.digest()
        if digest in self._certificates:
            return
        if not _certificate_valid(self.committee, certificate, digest, self.network):
            return
        self._add_certificate(digest, certificate)
        self._pending.pop(digest, None)
        self._missing.discard(digest)

    def _add_certificate(self, digest: bytes, certificate: Certificate) -> None:
        self._certificates[digest] = certificate
        self._highest_round = max(self._highest_round, certificate.header.round)
        self._ordered = None

    def _prune(self) -> None:
        floor = self.highest_round - self.window_rounds
        if floor <= self._pruned_below:
            return
        self._pruned_below = floor
        self._ordered = None
        for digest in [d for d, c in self._certificates.items() if c.header.round < floor]:
            del self._certificates[digest]
        for digest in [d for d, p in self._pending.items() if p.header.round < floor]:
            del self._pending[digest]
        live = set(self._certificates) | set(self._pending)
        for view in self._views.values():
            view.lists = {d for d in view.lists if d not in self._certificates}
            if len(view.lists) > MAX_WANTED:
                view.lists = set(sorted(view.lists)[:MAX_WANTED])
            view.known = {d for d in view.known if d in self._certificates or d in view.lists}
            view.voted &= set(self._pending)
            view.holds &= live
            view.blocked = {d: m for d, m in view.blocked.items() if d in live}
            view.blocked_at = {d: t for d, t in view.blocked_at.items() if d in view.blocked}
            view.refused &= live
            if len(view.asked) > 4 * MAX_WANTED:
                view.asked.clear()
        if len(self._missing) > MAX_WANTED:
            self._missing = set(sorted(self._missing)[:MAX_WANTED])


def _carries_something(request: CoreRequest) -> bool:
    return bool(request.certificates or request.headers or request.wanted or request.log_records)


def _certificate_valid(
    committee: Committee, certificate: Certificate, digest: bytes, network: bytes
) -> bool:
    voters = [vote.voter for vote in certificate.votes]
    if len(set(voters)) != len(voters) or not committee.reaches_quorum(voters):
        return False
    if certificate.header.creator not in committee:
        return False
    if not header_signature_valid(certificate.header, digest, network):
        return False
    return all(certificate.vote_valid(digest, vote, network) for vote in certificate.votes)


class ByzantineDriver(Driver):
    """A driver that misbehaves at random (seeded): it withholds, reorders, replays old
    requests, mixes rounds and tampers with certificates.  Cores must stay safe whatever
    it sends; it still relays some of the time, so it is not merely silent."""

    def __init__(self, name: str, committee: Committee, rng: random.Random, **options: Any) -> None:
        super().__init__(name, committee, **options)
        self._rng = rng
        self._history: list[CoreRequest] = []
        self._old_certificates: list[Certificate] = []
        self._old_headers: list[Header] = []

    def _tamper(self, core: bytes, request: CoreRequest) -> CoreRequest:
        self._history.append(request)
        self._old_certificates.extend(request.certificates)
        self._old_headers.extend(request.headers)
        self._history = self._history[-64:]
        self._old_certificates = self._old_certificates[-64:]
        self._old_headers = self._old_headers[-64:]
        behaviour = self._rng.randrange(6)
        if behaviour == 0:
            return self._withhold(request)
        if behaviour == 1:
            return self._reorder(request)
        if behaviour == 2:
            return self._rng.choice(self._history)
        if behaviour == 3:
            return self._mix_rounds(request)
        if behaviour == 4:
            return self._forge(request)
        return request

    def _withhold(self, request: CoreRequest) -> CoreRequest:
        return CoreRequest(
            certificates=_some(self._rng, request.certificates),
            headers=_some(self._rng, request.headers),
            certified=_some(self._rng, request.certified),
            wanted=request.wanted,
            since_round=request.since_round,
        )

    def _reorder(self, request: CoreRequest) -> CoreRequest:
        certificates = list(request.certificates)
        headers = list(request.headers)
        self._rng.shuffle(certificates)
        self._rng.shuffle(headers)
        return msgspec.structs.replace(
            request, certificates=tuple(certificates), headers=tuple(headers)
        )

    def _mix_rounds(self, request: CoreRequest) -> CoreRequest:
        certificates = list(request.certificates) + self._rng.sample(
            self._old_certificates, min(4, len(self._old_certificates))
        )
        headers = list(request.headers) + self._rng.sample(
            self._old_headers, min(4, len(self._old_headers))
        )
        self._rng.shuffle(certificates)
        return CoreRequest(
            certificates=tuple(certificates[:MAX_CERTIFICATES_PER_MESSAGE]),
            headers=tuple(headers[:MAX_HEADERS_PER_REQUEST]),
            wanted=request.wanted,
            since_round=self._rng.randrange(0, 2 + request.since_round * 2),
        )

    def _forge(self, request: CoreRequest) -> CoreRequest:
        """Certificates with too few votes, or votes moved onto another header."""
        forged: list[Certificate] = []
        for certificate in request.certificates:
            if self._rng.random() < 0.5 and len(certificate.votes) > 1:
                forged.append(msgspec.structs.replace(certificate, votes=certificate.votes[:1]))
            elif self._old_headers:
                other = self._rng.choice(self._old_headers)
                forged.append(msgspec.structs.replace(certificate, header=other))
            else:
                forged.append(certificate)
        stripped = tuple(
            msgspec.structs.replace(item, votes=item.votes[:1]) for item in request.certified
        )
        log_records = list(request.log_records)
        if log_records:
            index = self._rng.randrange(len(log_records))
            forged_record = msgspec.structs.replace(log_records[index], transactions=(b"forged",))
            log_records[index] = forged_record
        return msgspec.structs.replace(
            request,
            certificates=tuple(forged),
            certified=stripped,
            log_records=tuple(log_records),
        )


def _some(rng: random.Random, items: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(item for item in items if rng.random() < 0.5)

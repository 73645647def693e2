"""Reading federated networks: stellarbeat JSON, stellar-core quorum JSON, synod quorum sets.

Theory of operation
-------------------
Inputs arrive already parsed (`json.loads` output) or as in-memory quorum sets: this
package does no file I/O.  Each loader checks the shape of every record and raises
`FbasInputError` naming the node (its position and key) and the field (a JSON path such
as ``quorumSet.innerQuorumSets[1].threshold``), then applies `LoadOptions`, the explicit
answers to the questions on which the known tools differ:

========================  =====================================================
question                  switch (default first)
========================  =====================================================
node without quorum set   ``missing_qset``: ``exclude`` (never in a quorum, like
                          stellar-core and fbas_analyzer) | ``unconstrained``
                          (satisfied by any set holding it: it can form a quorum
                          alone)
validator named in a      ``unknown_validators``: ``missing`` (added as a node
quorum set but absent     without quorum set, so ``missing_qset`` decides) |
from the input            ``error``
inactive node             ``inactive``: ``keep`` | ``drop`` (``active: false`` nodes
                          lose their quorum set and can never be in a quorum, as
                          fbas_analyzer does) | ``drop-non-validating`` (also
                          ``isValidating: false``)
quorum set failing        ``insane``: ``error`` | ``exclude`` (the node is treated as
stellar-core's sanity     having no quorum set, as a stellar-core peer that rejects
rules                     it would)
========================  =====================================================

A quorum set with no entries at its top level (stellarbeat writes
``{"threshold": 9007199254740991, "validators": [], "innerQuorumSets": []}`` for unknown
ones) means "no quorum set"; an *inner* set with no entries breaks the sanity rules.
Duplicate public keys are always an error: which record wins would be a guess.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from synod.fbas.network import ALWAYS_SATISFIED, Fbas, NodeInfo, Threshold, threshold_of

if TYPE_CHECKING:
    from synod.quorum.qset import QuorumSet

# stellar-core's sanity limits, as in `synod.quorum.qset` (a test checks they agree).
# Kept here so that loading a snapshot does not import the quorum package and, through
# it, the signature library: start-up is most of a command's time on real networks.
MAX_NESTING_DEPTH = 4
MAX_TOTAL_NODES = 1000

MissingQset = Literal["exclude", "unconstrained"]
UnknownValidators = Literal["missing", "error"]
Inactive = Literal["keep", "drop", "drop-non-validating"]
Insane = Literal["error", "exclude"]

_ACCOUNT_VERSION_BYTE = 6 << 3


class FbasInputError(ValueError):
    """The input is malformed; `node` and `field` say where (either may be None)."""

    def __init__(self, message: str, node: str | None = None, field: str | None = None) -> None:
        self.node = node
        self.field = field
        where = ", ".join(part for part in (node, f"field {field}" if field else None) if part)
        super().__init__(f"{where}: {message}" if where else message)


class OrganisationsInputError(FbasInputError):
    """The organisations document (stellarbeat's ``[{id, name, validators}]``), not the
    nodes, is malformed: a caller reading the two from different files names the right one."""


@dataclass(frozen=True)
class LoadOptions:
    """How to read the questions the known tools answer differently (module docstring)."""

    missing_qset: MissingQset = "exclude"
    unknown_validators: UnknownValidators = "missing"
    inactive: Inactive = "keep"
    insane: Insane = "error"
    check_keys: bool = True
    """Require Stellar strkeys ("G...", checksum verified) for node ids."""


@dataclass
class _RawNode:
    key: str
    where: str
    qset: _RawQset | None
    info: NodeInfo


@dataclass
class _RawQset:
    threshold: int
    validators: list[str] = field(default_factory=list)
    inner: list[_RawQset] = field(default_factory=list)
    path: str = "quorumSet"


# ---------------------------------------------------------------- strkeys


def _crc16_xmodem(data: bytes) -> int:
    # CRC16-XModem is CRC-CCITT (polynomial 0x1021) from 0, which the standard library
    # computes in C; a loop in Python cost most of the loading time of a 600-node file.
    return binascii.crc_hqx(data, 0)


def decode_public_key(strkey: str) -> bytes:
    """The 32-byte Ed25519 key inside a Stellar account strkey ("G...").

    Layout: base32 of version byte (6 << 3), 32 key bytes, CRC16-XModem little endian.
    Raises ValueError when the text is not such a key.
    """
    if len(strkey) != 56 or not strkey.isascii():
        raise ValueError("not a 56-character strkey")
    try:
        raw = base64.b32decode(strkey, casefold=False)
    except (binascii.Error, ValueError) as error:
        raise ValueError("not base32") from error
    if len(raw) != 35 or raw[0] != _ACCOUNT_VERSION_BYTE:
        raise ValueError("not an account public key (wrong version byte)")
    if _crc16_xmodem(raw[:33]) != int.from_bytes(raw[33:], "little"):
        raise ValueError("checksum mismatch")
    return raw[1:33]


def encode_public_key(key: bytes) -> str:
    """The strkey ("G...") of a 32-byte Ed25519 public key."""
    if len(key) != 32:
        raise ValueError("a public key has 32 bytes")
    body = bytes([_ACCOUNT_VERSION_BYTE]) + key
    return base64.b32encode(body + _crc16_xmodem(body).to_bytes(2, "little")).decode()


# ---------------------------------------------------------------- shape checks


def _expect_int(value: Any, node: str, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise FbasInputError(f"expected an integer, got {type(value).__name__}", node, path)
    return value


def _expect_list(value: Any, node: str, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise FbasInputError(f"expected a list, got {type(value).__name__}", node, path)
    return value


class _KeyCheck:
    """Verifies node ids, each distinct text once per load: a snapshot names every
    top-tier key in hundreds of quorum sets (about 8 mentions per key on the public
    network), and only the first mention needs decoding.  Memory: one set entry per
    distinct valid key, at most the input's own size."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.valid: set[str] = set()

    def __call__(self, value: Any, node: str, path: str) -> str:
        if not isinstance(value, str) or not value:
            raise FbasInputError("expected a public key string", node, path)
        if self.enabled and value not in self.valid:
            try:
                decode_public_key(value)
            except ValueError as error:
                raise FbasInputError(
                    f"{value!r} is not a Stellar public key ({error})", node, path
                ) from None
            self.valid.add(value)
        return value


def _optional_text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


# ---------------------------------------------------------------- stellarbeat


def _stellarbeat_qset(value: Any, node: str, path: str, check: _KeyCheck) -> _RawQset:
    if not isinstance(value, dict):
        raise FbasInputError(f"expected an object, got {type(value).__name__}", node, path)
    if "threshold" not in value:
        raise FbasInputError("missing threshold", node, path + ".threshold")
    threshold = _expect_int(value["threshold"], node, path + ".threshold")
    validators = [
        check(v, node, f"{path}.validators[{i}]")
        for i, v in enumerate(_expect_list(value.get("validators"), node, path + ".validators"))
    ]
    inner_values = _expect_list(value.get("innerQuorumSets"), node, path + ".innerQuorumSets")
    inner = [
        _stellarbeat_qset(v, node, f"{path}.innerQuorumSets[{i}]", check)
        for i, v in enumerate(inner_values)
    ]
    return _RawQset(threshold, validators, inner, path)


def _stellarbeat_node(record: Any, position: int, check: _KeyCheck) -> _RawNode:
    where = f"node #{position}"
    if not isinstance(record, dict):
        raise FbasInputError(f"expected an object, got {type(record).__name__}", where)
    if "publicKey" not in record:
        raise FbasInputError("missing publicKey", where, "publicKey")
    key = check(record["publicKey"], where, "publicKey")
    where = f"node #{position} ({key})"
    raw_qset = record.get("quorumSet")
    qset = None if raw_qset is None else _stellarbeat_qset(raw_qset, where, "quorumSet", check)
    geo = record.get("geoData")
    country = _optional_text(geo.get("countryName")) if isinstance(geo, dict) else None
    validating = record.get("isValidating")
    info = NodeInfo(
        public_key=key,
        name=_optional_text(record.get("name")),
        home_domain=_optional_text(record.get("homeDomain")),
        isp=_optional_text(record.get("isp")),
        country=country or _optional_text(record.get("country")),
        organization=_optional_text(record.get("organizationId")),
        active=record.get("active") is not False,
        validating=validating if isinstance(validating, bool) else None,
    )
    return _RawNode(key, where, qset, info)


def load_stellarbeat(
    data: Any,
    options: LoadOptions | None = None,
    organizations: Any = None,
) -> Fbas:
    """An `Fbas` from stellarbeat nodes JSON (a list of node objects), optionally with a
    stellarbeat organisations list (``[{id, name, validators}]``) naming the groups."""
    options = options or LoadOptions()
    if not isinstance(data, list):
        raise FbasInputError(f"expected a JSON array of nodes, got {type(data).__name__}")
    check = _KeyCheck(options.check_keys)
    raw = [_stellarbeat_node(record, i, check) for i, record in enumerate(data)]
    org_names = _organizations(organizations, check)
    return _build(raw, options, org_names)


def _organizations(data: Any, check: _KeyCheck) -> dict[str, tuple[str, set[str]]]:
    """Organisation id -> (display name, member keys); `OrganisationsInputError` when the
    document is malformed."""
    try:
        return _read_organizations(data, check)
    except FbasInputError as error:
        converted = OrganisationsInputError(str(error))
        converted.node, converted.field = error.node, error.field
        raise converted from None


def _read_organizations(data: Any, check: _KeyCheck) -> dict[str, tuple[str, set[str]]]:
    if data is None:
        return {}
    if not isinstance(data, list):
        raise FbasInputError(f"expected a JSON array of organisations, got {type(data).__name__}")
    result: dict[str, tuple[str, set[str]]] = {}
    for i, record in enumerate(data):
        where = f"organisation #{i}"
        if not isinstance(record, dict):
            raise FbasInputError("expected an object", where)
        org_id = record.get("id")
        name = _optional_text(record.get("name")) or (str(org_id) if org_id is not None else None)
        if name is None:
            raise FbasInputError("missing id and name", where, "id")
        members = {
            check(v, where, f"validators[{j}]")
            for j, v in enumerate(_expect_list(record.get("validators"), where, "validators"))
        }
        result[str(org_id) if org_id is not None else name] = (name, members)
    return result


# ---------------------------------------------------------------- stellar-core


def _core_qset(value: Any, node: str, path: str, check: _KeyCheck) -> _RawQset:
    if not isinstance(value, dict):
        raise FbasInputError(f"expected an object, got {type(value).__name__}", node, path)
    if "t" not in value:
        raise FbasInputError("missing threshold", node, path + ".t")
    threshold = _expect_int(value["t"], node, path + ".t")
    validators: list[str] = []
    inner: list[_RawQset] = []
    for i, entry in enumerate(_expect_list(value.get("v"), node, path + ".v")):
        entry_path = f"{path}.v[{i}]"
        if isinstance(entry, dict):
            inner.append(_core_qset(entry, node, entry_path, check))
        else:
            validators.append(check(entry, node, entry_path))
    return _RawQset(threshold, validators, inner, path)


def load_stellar_core(data: Any, options: LoadOptions | None = None) -> Fbas:
    """An `Fbas` from stellar-core's quorum JSON (the input of
    ``stellar-core check-quorum-intersection``):
    ``{"nodes": [{"node": KEY, "qset": {"t": N, "v": [KEY | QSET, ...]}}]}``."""
    options = options or LoadOptions()
    if not isinstance(data, dict) or "nodes" not in data:
        raise FbasInputError('expected an object with a "nodes" array', field="nodes")
    records = _expect_list(data["nodes"], "input", "nodes")
    raw: list[_RawNode] = []
    check = _KeyCheck(options.check_keys)
    for i, record in enumerate(records):
        where = f"node #{i}"
        if not isinstance(record, dict):
            raise FbasInputError("expected an object", where)
        if "node" not in record:
            raise FbasInputError("missing node", where, "node")
        key = check(record["node"], where, "node")
        where = f"node #{i} ({key})"
        value = record.get("qset")
        qset = None if value is None else _core_qset(value, where, "qset", check)
        raw.append(
            _RawNode(
                key, where, qset, NodeInfo(public_key=key, name=_optional_text(record.get("name")))
            )
        )
    return _build(raw, options, {})


def detect_format(data: Any) -> str:
    """"stellar-core" (``{"nodes": ...}``), "python-fbas" (``{"validators": ...,
    "qsets": ...}``) or "stellarbeat" (anything else: a JSON array is expected)."""
    if isinstance(data, dict) and "nodes" in data:
        return "stellar-core"
    if isinstance(data, dict) and "validators" in data and "qsets" in data:
        return "python-fbas"
    return "stellarbeat"


def detect_and_load(
    data: Any, options: LoadOptions | None = None, organizations: Any = None
) -> Fbas:
    """Load stellarbeat (a JSON array), stellar-core quorum JSON (``{"nodes": ...}``) or
    python-fbas JSON (``{"validators": [...], "qsets": {...}}``)."""
    detected = detect_format(data)
    if detected == "stellar-core":
        return load_stellar_core(data, options)
    if detected == "python-fbas":
        return load_python_fbas(data, options)
    return load_stellarbeat(data, options, organizations)


# ---------------------------------------------------------------- python-fbas

MAX_EXPANDED_ENTRIES = 10_000
"""Entries (validators and inner sets, at every depth) one quorum set may have once
python-fbas's shared qset references are expanded.  References form a graph, so a file
of a few kilobytes could otherwise expand to about width^5 entries within the nesting
limit; stellar-core's own limit of 1,000 validators leaves room for 10,000 entries."""

MAX_REFERENCE_DEPTH = 64
"""Qset references followed in a row.  Expanding recurses once per reference, so a long
chain of ids would exhaust Python's stack (about 1,000 frames); stellar-core refuses
nesting deeper than 4, so 64 only turns away files no tool would accept."""


class _PythonFbasQsets:
    """Expands python-fbas qset references into quorum sets, each id once, refusing
    cycles, dangling ids and expansions beyond `MAX_EXPANDED_ENTRIES`."""

    def __init__(self, table: Any, validator_ids: set[str], check: _KeyCheck) -> None:
        if not isinstance(table, dict):
            raise FbasInputError(f"expected an object, got {type(table).__name__}", field="qsets")
        self.table = table
        self.validator_ids = validator_ids
        self.check = check
        self.done: dict[str, tuple[_RawQset, int]] = {}
        self.visiting: set[str] = set()

    def expand(self, qset_id: str, where: str) -> _RawQset:
        return self._expand(qset_id, where)[0]

    def _expand(self, qset_id: str, where: str) -> tuple[_RawQset, int]:
        found = self.done.get(qset_id)
        if found is not None:
            return found
        path = f"qsets.{qset_id}"
        if qset_id in self.visiting:
            raise FbasInputError(f"qset {qset_id!r} refers to itself", where, path)
        value = self.table.get(qset_id)
        if not isinstance(value, dict):
            raise FbasInputError(f"no qset {qset_id!r}", where, path)
        if len(self.visiting) >= MAX_REFERENCE_DEPTH:
            raise FbasInputError(
                f"qset references nest deeper than {MAX_REFERENCE_DEPTH}", where, path
            )
        self.visiting.add(qset_id)
        if "threshold" not in value:
            raise FbasInputError("missing threshold", where, path + ".threshold")
        threshold = _expect_int(value["threshold"], where, path + ".threshold")
        validators: list[str] = []
        inner: list[_RawQset] = []
        size = 0
        for i, member in enumerate(_expect_list(value.get("members"), where, path + ".members")):
            member_path = f"{path}.members[{i}]"
            if not isinstance(member, str):
                raise FbasInputError("expected a validator or qset id", where, member_path)
            if member in self.table and member not in self.validator_ids:
                nested, nested_size = self._expand(member, where)
                inner.append(nested)
                size += 1 + nested_size
            else:
                validators.append(self.check(member, where, member_path))
                size += 1
            if size > MAX_EXPANDED_ENTRIES:
                raise FbasInputError(
                    f"expands to more than {MAX_EXPANDED_ENTRIES} entries", where, path
                )
        self.visiting.discard(qset_id)
        result = (_RawQset(threshold, validators, inner, path), size)
        self.done[qset_id] = result
        return result


def load_python_fbas(data: Any, options: LoadOptions | None = None) -> Fbas:
    """An `Fbas` from python-fbas's JSON: ``{"validators": [{"id": KEY, "qset": QSET_ID
    | null, "attrs": {...}}], "qsets": {QSET_ID: {"threshold": N, "members": [KEY |
    QSET_ID, ...]}}}``; attrs are read like a stellarbeat node's fields."""
    options = options or LoadOptions()
    if not isinstance(data, dict) or "validators" not in data or "qsets" not in data:
        raise FbasInputError('expected an object with "validators" and "qsets"', field="qsets")
    records = _expect_list(data["validators"], "input", "validators")
    check = _KeyCheck(options.check_keys)
    ids = {r.get("id") for r in records if isinstance(r, dict) and isinstance(r.get("id"), str)}
    qsets = _PythonFbasQsets(data["qsets"], {i for i in ids if isinstance(i, str)}, check)
    raw: list[_RawNode] = []
    for position, record in enumerate(records):
        where = f"validator #{position}"
        if not isinstance(record, dict):
            raise FbasInputError(f"expected an object, got {type(record).__name__}", where)
        if "id" not in record:
            raise FbasInputError("missing id", where, "id")
        key = check(record["id"], where, "id")
        where = f"validator #{position} ({key})"
        qset_id = record.get("qset")
        if qset_id is not None and not isinstance(qset_id, str):
            raise FbasInputError("expected a qset id or null", where, "qset")
        qset = None if qset_id is None else qsets.expand(qset_id, where)
        attrs = record.get("attrs")
        fields = dict(attrs) if isinstance(attrs, dict) else {}
        fields.pop("quorumSet", None)  # the qset reference above is the quorum set
        fields["publicKey"] = key
        info = _stellarbeat_node(fields, position, check).info
        raw.append(_RawNode(key, where, qset, info))
    return _build(raw, options, {})


# ---------------------------------------------------------------- synod quorum sets


def from_quorum_sets(
    qsets: Mapping[bytes, QuorumSet | None],
    names: Mapping[bytes, str] | None = None,
    organizations: Mapping[bytes, str] | None = None,
    options: LoadOptions | None = None,
    key_text: Callable[[bytes], str] | None = None,
) -> Fbas:
    """An `Fbas` from synod's own quorum sets (node id -> `QuorumSet`), as a network
    configuration resolves to.  Node ids are shown as `key_text` makes them (synod's
    "N..." text by default; `encode_public_key` gives Stellar strkeys)."""
    options = options or LoadOptions()
    text_of = key_text if key_text is not None else _synod_node_id_text()

    def convert(qset: QuorumSet, path: str) -> _RawQset:
        return _RawQset(
            qset.threshold,
            [text_of(v) for v in qset.validators],
            [convert(inner, f"{path}.inner_sets[{i}]") for i, inner in enumerate(qset.inner_sets)],
            path,
        )

    raw = []
    for node_id, qset in qsets.items():
        key = text_of(node_id)
        info = NodeInfo(
            key,
            name=(names or {}).get(node_id),
            organization=(organizations or {}).get(node_id),
        )
        where = f"node {info.name or key}"
        raw.append(
            _RawNode(key, where, None if qset is None else convert(qset, "quorum_set"), info)
        )
    return _build(raw, options, {})


def _synod_node_id_text() -> Callable[[bytes], str]:
    # Imported on use: synod.crypto loads the signature library, which stellarbeat and
    # stellar-core inputs never need.
    from synod.crypto import node_id_text

    return node_id_text


# ---------------------------------------------------------------- common build


def _sanity_problem(qset: _RawQset, depth: int, seen: set[str]) -> tuple[str, str] | None:
    """(field, message) of the first sanity rule `qset` breaks, else None."""
    if depth > MAX_NESTING_DEPTH:
        return qset.path, f"nesting deeper than {MAX_NESTING_DEPTH}"
    entries = len(qset.validators) + len(qset.inner)
    if not 1 <= qset.threshold <= entries:
        field_name = qset.path + (".t" if qset.path.startswith("qset") else ".threshold")
        return field_name, f"threshold {qset.threshold} outside 1..{entries}"
    for i, validator in enumerate(qset.validators):
        if validator in seen:
            return f"{qset.path}.validators[{i}]", f"validator {validator} appears twice"
        seen.add(validator)
    for inner in qset.inner:
        problem = _sanity_problem(inner, depth + 1, seen)
        if problem:
            return problem
    if depth == 0 and len(seen) > MAX_TOTAL_NODES:
        return qset.path, f"{len(seen)} validators exceed the limit {MAX_TOTAL_NODES}"
    return None


def _is_empty(qset: _RawQset) -> bool:
    return not qset.validators and not qset.inner


def _is_inactive(info: NodeInfo, policy: Inactive) -> bool:
    if policy == "keep":
        return False
    if not info.active:
        return True
    return policy == "drop-non-validating" and info.validating is False


def _build(
    raw: Sequence[_RawNode],
    options: LoadOptions,
    organizations: Mapping[str, tuple[str, set[str]]],
) -> Fbas:
    notes: list[str] = []
    index = _index_keys(raw)
    infos = [node.info for node in raw]
    unknown = _add_unknown_validators(raw, index, infos, options)
    if unknown:
        notes.append(f"{unknown} validators named in quorum sets are absent from the input")
    infos = _attach_organizations(infos, index, organizations, notes)
    counts = {"no quorum set": 0, "inactive": 0, "insane": 0}
    interned: dict[Threshold, Threshold] = {}
    qsets: list[Threshold | None] = []
    for position, info in enumerate(infos):
        node = raw[position] if position < len(raw) else None
        verdict, qset = _node_qset(node, info, index, options, interned)
        if verdict:
            counts[verdict] += 1
        qsets.append(qset)
    notes.extend(f"{count} nodes: {what}" for what, count in counts.items() if count)
    return Fbas(tuple(infos), tuple(qsets), tuple(notes), dict(index))


def _index_keys(raw: Sequence[_RawNode]) -> dict[str, int]:
    index: dict[str, int] = {}
    for position, node in enumerate(raw):
        if node.key in index:
            raise FbasInputError(
                f"duplicate public key (first at node #{index[node.key]})", node.where, "publicKey"
            )
        index[node.key] = position
    return index


def _add_unknown_validators(
    raw: Sequence[_RawNode], index: dict[str, int], infos: list[NodeInfo], options: LoadOptions
) -> int:
    """Give validators named in quorum sets but absent from the input a node entry (or
    raise, as `options` says); return how many were added."""
    added = 0
    for node in raw:
        if node.qset is None:
            continue
        for member in _raw_members(node.qset):
            if member in index:
                continue
            if options.unknown_validators == "error":
                raise FbasInputError(
                    f"validator {member} is not in the input", node.where, node.qset.path
                )
            index[member] = len(infos)
            infos.append(NodeInfo(public_key=member, listed=False))
            added += 1
    return added


def _node_qset(
    node: _RawNode | None,
    info: NodeInfo,
    index: Mapping[str, int],
    options: LoadOptions,
    interned: dict[Threshold, Threshold],
) -> tuple[str | None, Threshold | None]:
    """(what was unusual, the quorum set to analyse) for one node under `options`."""
    if node is None or node.qset is None or _is_empty(node.qset):
        unconstrained = options.missing_qset == "unconstrained"
        return "no quorum set", ALWAYS_SATISFIED if unconstrained else None
    if _is_inactive(info, options.inactive):
        return "inactive", None
    problem = _sanity_problem(node.qset, 0, set())
    if problem is not None:
        if options.insane == "error":
            raise FbasInputError(problem[1] + " (insane quorum set)", node.where, problem[0])
        return "insane", None
    return None, _convert(node.qset, index, interned)


def _raw_members(qset: _RawQset) -> list[str]:
    members = list(qset.validators)
    for inner in qset.inner:
        members.extend(_raw_members(inner))
    return members


def _convert(
    qset: _RawQset, index: Mapping[str, int], interned: dict[Threshold, Threshold]
) -> Threshold:
    """The index form of `qset`; equal quorum sets come back as one shared object, so
    that analyses can recognise them by identity."""
    converted = threshold_of(
        qset.threshold,
        (index[v] for v in qset.validators),
        (_convert(inner, index, interned) for inner in qset.inner),
    )
    return interned.setdefault(converted, converted)


def _attach_organizations(
    infos: list[NodeInfo],
    index: Mapping[str, int],
    organizations: Mapping[str, tuple[str, set[str]]],
    notes: list[str],
) -> list[NodeInfo]:
    """Organisation labels: the name from the organisations file (by id, or by listed
    membership: the first organisation listing a validator names it, and a note says
    when another lists it too); otherwise the home domain most of the organisation's
    nodes share (stellarbeat verifies organisations through their domain), else the raw
    id."""
    result = list(infos)
    named: set[int] = set()
    for position, info in enumerate(result):
        if info.organization is not None and info.organization in organizations:
            result[position] = _replace_org(info, organizations[info.organization][0])
            named.add(position)
    named |= _label_listed_validators(result, index, organizations, notes)
    domains: dict[str, dict[str, int]] = {}
    for position, info in enumerate(result):
        if position not in named and info.organization is not None and info.home_domain:
            counts = domains.setdefault(info.organization, {})
            counts[info.home_domain] = counts.get(info.home_domain, 0) + 1
    taken = {info.organization for position, info in enumerate(result) if position in named}
    labels: dict[str, str] = {}
    for organization, counts in sorted(domains.items()):
        domain = min(counts, key=lambda d: (-counts[d], d))
        if domain not in taken:
            labels[organization] = domain
            taken.add(domain)
    for position, info in enumerate(result):
        if position not in named and info.organization in labels:
            result[position] = _replace_org(info, labels[info.organization])
    return result


def _label_listed_validators(
    result: list[NodeInfo],
    index: Mapping[str, int],
    organizations: Mapping[str, tuple[str, set[str]]],
    notes: list[str],
) -> set[int]:
    """Label each validator an organisation lists with that organisation's name (the
    first one listing it); the positions labelled."""
    listed_by: dict[int, str] = {}
    for name, members in organizations.values():
        for key in sorted(members):
            found = index.get(key)
            if found is None:
                continue
            first = listed_by.setdefault(found, name)
            if first != name:
                notes.append(
                    f"validator {key} is listed by organisations {first!r} and {name!r}: "
                    f"labelled {first!r}"
                )
            elif result[found].organization != name:
                result[found] = _replace_org(result[found], name)
    return set(listed_by)


def _replace_org(info: NodeInfo, organization: str) -> NodeInfo:
    return replace(info, organization=organization)


# ---------------------------------------------------------------- what-if


def select_nodes(fbas: Fbas, names: Sequence[str]) -> int:
    """The bitset of the nodes that `names` designate: each name is a public key, a
    node name, an organisation (its label or id as loaded) or a home domain; a name
    that matches nothing raises `FbasInputError` naming it."""
    selected = 0
    for name in names:
        matched = 0
        for position, info in enumerate(fbas.nodes):
            if name in (info.public_key, info.name, info.organization, info.home_domain):
                matched |= 1 << position
        if not matched:
            raise FbasInputError(
                f"{name!r} is no node key, node name, organisation or home domain of the network"
            )
        selected |= matched
    return selected


def apply_quorum_set_changes(fbas: Fbas, document: Any, options: LoadOptions | None = None) -> Fbas:
    """`fbas` with the quorum sets that `document` proposes: one change or a list of
    changes, each ``{"publicKey": KEY, "quorumSet": {...}}`` (stellarbeat shape) or
    ``{"node": KEY, "qset": {"t": .., "v": [..]}}`` (stellar-core shape).  A key new to
    the network adds a node; validators new to it are added as nodes without a
    quorum set.  The same checks as the loaders apply, with the same messages."""
    options = options or LoadOptions()
    changes = document if isinstance(document, list) else [document]
    check = _KeyCheck(options.check_keys)
    raw: list[_RawNode] = []
    for position, change in enumerate(changes):
        where = f"change #{position}"
        if not isinstance(change, dict):
            raise FbasInputError(f"expected an object, got {type(change).__name__}", where)
        if "publicKey" in change:
            key = check(change["publicKey"], where, "publicKey")
            value = change.get("quorumSet")
            qset = None if value is None else _stellarbeat_qset(value, where, "quorumSet", check)
        elif "node" in change:
            key = check(change["node"], where, "node")
            value = change.get("qset")
            qset = None if value is None else _core_qset(value, where, "qset", check)
        else:
            raise FbasInputError('expected "publicKey" (or "node")', where, "publicKey")
        raw.append(_RawNode(key, f"{where} ({key})", qset, NodeInfo(public_key=key)))
    return _rebuild_with(fbas, raw, options)


def _rebuild_with(fbas: Fbas, changes: Sequence[_RawNode], options: LoadOptions) -> Fbas:
    index = dict(fbas.index)
    infos = list(fbas.nodes)
    for change in changes:
        if change.key not in index:
            index[change.key] = len(infos)
            infos.append(change.info)
    _add_unknown_validators(changes, index, infos, replace(options, unknown_validators="missing"))
    qsets = list(fbas.qsets) + [None] * (len(infos) - len(fbas.qsets))
    interned: dict[Threshold, Threshold] = {}
    for change in changes:
        position = index[change.key]
        _, qsets[position] = _node_qset(change, infos[position], index, options, interned)
    notes = (*fbas.notes, f"{len(changes)} quorum sets changed as proposed")
    return Fbas(tuple(infos), tuple(qsets), notes, index)

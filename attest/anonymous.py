"""One-time signing for the anonymous tier: envelopes that carry no identity. Pure.

An anonymous statement is signed by a fresh Ed25519 key used once and thrown away. The
signature's keyid is that key's C2SP verifier key (`anonymous+<key id>+<base64 key>`), so the
envelope verifies on its own — anyone can check it was not altered after signing — while the key
links to nothing: a new key per statement. What authorises the write is a Privacy Pass token,
checked by the log and never stored with the entry.
"""

from __future__ import annotations

from attest._wire import parse_verifier_key
from attest.dsse import IN_TOTO_PAYLOAD_TYPE, Envelope, Signature, TrustedKey, pae, verify_envelope
from attest.errors import SignatureError
from attest.keys import generate_private_key, public_key_bytes, public_key_from_bytes
from attest.note import SIG_TYPE_ED25519, format_vkey

ONE_TIME_NAME = "anonymous"


def sign_one_time(payload: bytes, payload_type: str = IN_TOTO_PAYLOAD_TYPE) -> Envelope:
    """Sign `payload` with a fresh key that is discarded on return."""
    key = generate_private_key()
    vkey = format_vkey(ONE_TIME_NAME, SIG_TYPE_ED25519, public_key_bytes(key.public_key()))
    sig = key.sign(pae(payload_type, payload))
    return Envelope(payload_type=payload_type, payload=payload, signatures=(Signature(vkey, sig),))


def verify_one_time(env: Envelope) -> None:
    """Check that `env` has exactly one signature, by the self-certifying key its keyid names.

    Raises SignatureError otherwise (also for any keyid that is not a one-time verifier key).
    """
    if len(env.signatures) != 1:
        raise SignatureError("an anonymous envelope carries exactly one one-time signature")
    keyid = env.signatures[0].keyid
    try:
        name, sig_type, raw = parse_verifier_key(keyid)
    except ValueError as e:
        raise SignatureError(f"keyid is not a one-time verifier key: {e}") from e
    if name != ONE_TIME_NAME or sig_type != SIG_TYPE_ED25519:
        raise SignatureError(f"one-time keys are named {ONE_TIME_NAME!r}, type 0x01")
    verify_envelope(env, [TrustedKey(keyid, public_key_from_bytes(raw))], threshold=1)

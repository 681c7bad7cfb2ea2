"""registry.audit_chain: the chain's HMAC is the standard one."""

from __future__ import annotations

import hmac
import os

import pytest

from registry.audit_chain import Hmac


@pytest.mark.parametrize("key_length", [0, 1, 16, 32, 63, 64, 65, 200])
def test_hmac_with_precomputed_pads_is_hmac_sha256(key_length: int) -> None:
    key = os.urandom(key_length)
    mac = Hmac(key)
    for message in (b"", b"x", os.urandom(63), os.urandom(64), os.urandom(1000)):
        assert mac.digest(message) == hmac.digest(key, message, "sha256")
    assert mac.digest(b"head", b"tail") == hmac.digest(key, b"headtail", "sha256")
    # the pads are copied, never consumed: the same message, the same digest
    assert mac.digest(b"again") == mac.digest(b"again")

"""rustymt.api.encoding: orjson and its stdlib twin agree; kept encodings are reused only for the very same value."""
from __future__ import annotations

import json

from rustymt.api import encoding


def test_orjson_and_the_stdlib_twin_write_the_same_values():
    value = {"tenant": "acme", "n": 2**63 - 1, "ratio": 0.1, "ok": True, "none": None, "text": "Zürich ☃",
             "nested": [{"a": []}, 1.5e-7]}
    assert json.loads(encoding.encode(value)) == json.loads(encoding.encode_stdlib(value)) == value


def test_integers_beyond_64_bits_fall_back_to_the_stdlib_encoder():
    assert json.loads(encoding.encode({"big": 2**70})) == {"big": 2**70}


def test_kept_encoding_is_reused_for_the_same_object_only():
    kept = encoding.KeptEncodings()
    body = {"tenants": [], "total": 0}
    first = kept.encode("k", body)
    assert kept.encode("k", body) is first  # not encoded again
    equal_but_new = {"tenants": [], "total": 0}
    assert kept.encode("k", equal_but_new) is not first  # a new object is encoded afresh
    changed = {"tenants": [], "total": 1}
    assert json.loads(kept.encode("k", changed)) == changed


def test_a_limit_bounds_the_keys_kept():
    kept = encoding.KeptEncodings(limit=3)
    bodies = [{"page": index} for index in range(10)]
    for index, body in enumerate(bodies):
        kept.encode(("scope", f"page={index}"), body)
        assert len(kept._kept) <= 3
    latest = kept.encode(("scope", "page=9"), bodies[9])
    assert kept.encode(("scope", "page=9"), bodies[9]) is latest
    assert json.loads(kept.encode(("scope", "page=0"), bodies[0])) == {"page": 0}  # dropped keys encode again

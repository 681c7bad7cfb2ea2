"""The audit record encoder: kernel and twin write exactly the bytes the chain signs.

``canonical(serialise(entry))`` (``registry.audit_chain``) is the specification:
compact, key-sorted JSON of the record's fields, which ``osprey audit verify``
recomputes from SQL. Both encoders must produce it byte for byte, for awkward
strings (control characters, quotes, non-ASCII), every numeric dtype, NaN and the
infinities, BYTES and personal-data columns (left to Python), and any time.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

from native import _audit_record, audit_record_py
from registry.audit_chain import canonical
from server.audit_spool import AuditEntry, AuditLog, serialise
from server.ids import uuid7

ENCODERS = {"kernel": _audit_record.encode, "twin": audit_record_py.encode}


def entry(i: int, rng: np.random.Generator) -> AuditEntry:
    x = rng.random((1 + i % 3, 30)).astype(np.float32)
    if i % 5 == 0:
        x[0, :4] = [np.nan, np.inf, -np.inf, -0.0]
    if i % 7 == 0:
        x[0, 4:8] = [1e20, 1e-7, 123456790.0, 3.0]
    inputs = {
        "INPUT": x, "Z": np.arange(3, dtype=np.int64) - 1, "B": np.array([True, False]),
        "U": np.array([2**64 - 1], np.uint64), "F64": np.array([[0.1, 1 / 3]]),
        "é": np.array([1], np.int8), "NAME": np.array([b"al\x00ice", b'bo"b'], dtype=object),
        "BIG": np.array([1, 2], dtype=">i4"), "T": np.ones((2, 3), np.float32).T,
    }
    if i % 3 == 0:
        inputs["BYTES"] = (b"\x03\x00\x00\x00abc\x02\x00\x00\x00\xff\xfe", 2)
    return AuditEntry(
        decision_id=str(uuid7()), at_ns=time.time_ns() - i * 86_400_000_000_123,
        request_id='r\n\t\x01\u2028é"\\', routing_key="k", model="mlp",
        version=None if i % 4 == 0 else i, route="stable", rows=x.shape[0], status="OK",
        error="e\x1f\x7f", latency_us=300, caller="ipv4:127.0.0.1:1", principal="",
        trace_id="", inputs=inputs,
        outputs={"P": np.full((x.shape[0], 1), 0.25, np.float32), "H": np.ones(2, np.float16)},
        queue_us=None if i % 2 else 7, personal=frozenset({"NAME"}) if i % 2 else frozenset(),
    )


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_encoders_write_the_canonical_bytes(name: str, tmp_path: Path) -> None:
    log = AuditLog(tmp_path, b"k" * 32, "relaxed", pii_key=b"p" * 32)
    rng = np.random.default_rng(7)
    for i in range(120):
        e = entry(i, rng)
        expected = canonical(serialise(e, "host:1:s", i, log.pii_key))
        assert ENCODERS[name](e, "host:1:s", i, log._column_json) == expected, i


@pytest.mark.parametrize("at_ns", [0, 1, 999, 1_000, 951_782_400_000_000_000,
                                   253_402_300_799_999_999, -1, -86_400_000_000_001])
def test_times_at_the_edges(at_ns: int, tmp_path: Path) -> None:
    log = AuditLog(tmp_path, b"k" * 32, "relaxed")
    e = entry(1, np.random.default_rng(1))
    e.at_ns = at_ns
    expected = canonical(serialise(e, "s", 1, log.pii_key))
    for encode in ENCODERS.values():
        assert encode(e, "s", 1, log._column_json) == expected


def test_a_string_python_cannot_encode_fails_in_both(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, b"k" * 32, "relaxed")
    e = entry(1, np.random.default_rng(1))
    e.request_id = "lone \ud800 surrogate"
    for encode in ENCODERS.values():
        with pytest.raises(UnicodeEncodeError):
            encode(e, "s", 1, log._column_json)


def _float32_samples(count: int) -> np.ndarray:
    rng = np.random.default_rng(2026)
    bits = rng.integers(0, 2**32, count, dtype=np.uint64).astype(np.uint32)
    edges = np.array([0.1, 18.4, 1e-5, 3.4028235e38, 2.0**-99, 2.0**-98, 16777216, 16777217,
                      1e16, 1e17, 0.5, 7, 2.5, 1e-4, 33554432, 8388608.5, 1.0, 0.3], np.float32)
    powers = np.float32(2.0) ** np.arange(-99, 128, dtype=np.float32)
    return np.concatenate([bits.view(np.float32), edges, -edges, powers])


def test_float32_is_written_shortest_and_reads_back_the_same() -> None:
    """Every float32 the encoder writes as a decimal (|x| >= 2^-99) is the shortest that
    reads back as the same float32 (NumPy's Dragon4 agrees on the length), ``json``
    re-writes it unchanged (what ``verify`` relies on), and the kernel (Schubfach) and
    the twin (exact fractions) give the same text."""
    checked = 0
    for value in _float32_samples(40_000):
        if not np.isfinite(value):
            continue
        text = _audit_record.f32_repr(value)
        if text is None:
            assert abs(value) < 2.0**-99 and audit_record_py.f32_repr(value) is None
            continue
        assert text == audit_record_py.f32_repr(value)
        assert np.float32(float(text)).view(np.uint32) == np.float32(value).view(np.uint32)
        assert json.dumps(float(text)) == text
        shortest = np.format_float_scientific(value, unique=True).split("e")[0]
        digits = shortest.replace("-", "").replace(".", "").strip("0")
        assert len(text.split("e")[0].replace("-", "").replace(".", "").strip("0")) == len(
            digits), (value, text, shortest)
        checked += 1
    assert checked > 30_000


def test_every_float32_of_some_exponents_matches_the_twin() -> None:
    """Mantissas of a few exponents (the smallest written as a decimal, around 1, a
    power-of-two boundary, the largest), kernel against twin, enumerated through
    NumPy: a stride through whole binades, cheaply enough for the suite. (Once, on
    2026-11-28, all 1,904,214,016 positive finite float32 with an exponent field of 28
    or more were checked in C against the kernel this one replaced, double arithmetic
    with an exact 128-bit fallback: every text equal.)"""
    step = 4099  # a prime stride through the mantissas keeps it to a few seconds
    for field in (28, 29, 126, 127, 128, 150, 254):
        mantissas = np.arange(0, 1 << 23, step, dtype=np.uint32)
        for sign in (0, 1):
            bits = (np.uint32(sign) << 31) | (np.uint32(field) << 23) | mantissas
            for value in bits.view(np.float32).tolist():
                assert _audit_record.f32_repr(value) == audit_record_py.f32_repr(value), value


def test_the_schubfach_table_is_what_python_integers_give() -> None:
    """The kernel's 10^-k table, recomputed exactly: for k in [-45, 31], 10^-k = beta *
    2^r with 2^125 <= beta < 2^126, and the entry is (floor(beta) + 1) >> 63."""
    source = (Path(__file__).resolve().parents[2] / "native" / "_audit_record.pyx").read_text()
    table = source[source.index("OSPREY_G1[77] = {"):]
    entries = [int(x, 16) for x in re.findall(r"0x([0-9a-f]{16})ULL", table[:table.index("};")])]
    expected = []
    for k in range(-45, 32):
        r = ((-k * 913124641741) >> 38) - 125  # floor(-k log2 10) - 125
        num, den = (10**-k, 1) if k <= 0 else (1, 10**k)
        num, den = (num, den << r) if r >= 0 else (num << -r, den)
        beta = num // den
        assert 1 << 125 <= beta < 1 << 126
        expected.append((beta + 1) >> 63)
    assert entries == expected


# -- split: how the shipper reads a line back ----------------------------------------------

SPLITTERS = {"kernel": _audit_record.split, "twin": audit_record_py.split}


def _lines(tmp_path: Path, count: int) -> list[bytes]:
    log = AuditLog(tmp_path, b"k" * 32, "relaxed", pii_key=b"p" * 32)
    rng = np.random.default_rng(11)
    lines = []
    for i in range(count):
        body = _audit_record.encode(entry(i, rng), "host:1:s", i, log._column_json)
        lines.append(body[:-1] + b',"chain":"ab","declared":["P",null,0.5]}')
    return lines


@pytest.mark.parametrize("name", sorted(SPLITTERS))
def test_split_gives_scalars_as_values_and_tensors_as_their_exact_text(
    name: str, tmp_path: Path
) -> None:
    for line in _lines(tmp_path, 60):
        parsed = json.loads(line)
        fields = SPLITTERS[name](line)
        assert fields.keys() == parsed.keys()
        for key, value in fields.items():
            if isinstance(parsed[key], dict | list):
                assert isinstance(value, str)
                assert value.encode() in line  # the very text written, not a re-encoding
                assert json.loads(value) == json.loads(json.dumps(parsed[key]))
            else:
                assert value == parsed[key] and type(value) is type(parsed[key]), key


def test_split_kernel_and_twin_agree_on_odd_but_valid_lines() -> None:
    lines = [b"{}", b' { "a" : [ 1 , {"x": "]}"} ] , "b":-0.5E+3 ,"c":false } ',
             b'{"k\\u00e9y":"v\\"\\\\\\n","n":null,"t":true,"i":-12,"f":1e-7,"s":"\xc3\xa9"}',
             b'{"o":{},"l":[],"z":0}']
    for line in lines:
        assert _audit_record.split(line) == audit_record_py.split(line) == {
            k: v if not isinstance(v, dict | list) else _audit_record.split(line)[k]
            for k, v in json.loads(line).items()}


@pytest.mark.parametrize("name", sorted(SPLITTERS))
def test_split_refuses_every_torn_line_and_bad_values(name: str, tmp_path: Path) -> None:
    split = SPLITTERS[name]
    line = _lines(tmp_path, 1)[0]
    for cut in range(len(line)):  # a crash can leave any prefix
        with pytest.raises(ValueError, match="audit record"):
            split(line[:cut])
    for bad in (b'{"a":}', b'{"a":1,}', b'{"a" 1}', b'{"a":1}x', b'{"a":+1}', b'{"a":tru}',
                b'[1]', b'{"a":"x\x01"}', b'{"a":1 "b":2}', b'{a:1}'):
        with pytest.raises(ValueError, match="audit record"):
            split(bad)


# -- records: a whole segment read into the tuples the shipper loads -----------------------

READERS = {"kernel": _audit_record.records, "twin": audit_record_py.records}
FIELDS = ("seq", "decision_id", "inputs", "outputs", "latency_us", "queue_us", "declared",
          "not_in_any_line", "version")


def _expected(lines: list[bytes], fields: tuple[str, ...]) -> list[tuple[object, ...]]:
    return [tuple(audit_record_py.split(line).get(f) for f in fields) for line in lines]


@pytest.mark.parametrize("name", sorted(READERS))
def test_records_reads_every_line_as_split_does_in_the_fields_order(
    name: str, tmp_path: Path
) -> None:
    lines = _lines(tmp_path, 40)
    segment = b"\n".join(lines) + b"\n"
    rows, torn = READERS[name](segment, FIELDS)
    assert torn == 0
    assert rows == _expected(lines, FIELDS)
    for row, line in zip(rows, lines, strict=True):  # the same types, the exact text
        assert [type(v) for v in row] == [type(v) for v in _expected([line], FIELDS)[0]]
        assert row[2].encode() in line and row[3].encode() in line  # type: ignore[union-attr]


def test_records_kernel_and_twin_agree_on_odd_segments() -> None:
    segments = [
        b"", b"\n\n", bytes(100), b'{}\n{"seq":1}',
        b'{"seq":1,"seq":2}\n',  # a repeated key: the last one, as json reads it
        b'{"s\\u0065q":3,"version":null,"declared":[1,{"a":"]"}]}\n',  # an escaped key
        b'{"latency_us":-12,"queue_us":123456789012345678901234,"version":1e2}\n',
        b' { "seq" : 7 , "decision_id" : "\xc3\xa9\\n" } \n{"inputs":{}}\n' + bytes(9),
        b'{"version":-0,"seq":18446744073709551616,"queue_us":999999999999999999}\n',
    ]
    for segment in segments:
        assert _audit_record.records(segment, FIELDS) == audit_record_py.records(
            segment, FIELDS), segment


@pytest.mark.parametrize("name", sorted(READERS))
def test_records_leaves_out_a_torn_last_line_and_refuses_a_bad_one_before_it(
    name: str, tmp_path: Path
) -> None:
    read = READERS[name]
    lines = _lines(tmp_path, 3)
    whole = b"\n".join(lines[:2]) + b"\n"
    for cut in (1, 17, len(lines[2]) // 2, len(lines[2]) - 1):  # a crash cut the last write
        for fill in (b"", bytes(4096)):  # a strict segment's zeros after the data
            rows, torn = read(whole + lines[2][:cut] + fill, FIELDS)
            assert rows == _expected(lines[:2], FIELDS) and torn == cut
    rows, torn = read(whole + lines[2], FIELDS)  # complete, only its newline missing
    assert rows == _expected(lines, FIELDS) and torn == 0
    with pytest.raises(ValueError, match=r"line 2: audit record: .* at position"):
        read(lines[0] + b"\n" + lines[1][:50] + b"\n" + lines[2] + b"\n", FIELDS)
    with pytest.raises(ValueError, match="line 1: audit record: bad value"):
        read(b'{"seq":tru}\n', FIELDS)
    with pytest.raises(ValueError, match="line 3: audit record: data after the object"):
        read(b'{"seq":1}\n\n{"seq":2}x\n{"seq":3}', FIELDS)


@pytest.mark.parametrize("name", ["kernel", "twin"])
def test_frame_adds_the_chain_and_the_declared_outputs_as_the_last_keys(name: str) -> None:
    frame = _audit_record.frame if name == "kernel" else audit_record_py.frame
    chain = bytes(range(0, 256, 8))
    line = frame(b'{"a":1,"s":"}"}', chain, b'["P",null,0.5]')
    assert line.endswith(b"}\n") and line.count(b"\n") == 1
    assert json.loads(line) == {"a": 1, "s": "}", "chain": chain.hex(),
                                "declared": ["P", None, 0.5]}
    for bad in (b"", b"}", b'{"a":1'):
        with pytest.raises(ValueError, match="not a JSON object"):
            frame(bad, chain, b"null")

"""Postage from the signed tariff: integer fen, monotone in the weight,
the zone from the postcode, refusals for weights and services it does not
price; tariffs that would make postage ill-defined are refused."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import platform_docs as sd
from common.tariff import PostageError, Tariff, postage
from tests.gateway.counter.platform_rig import KEYS, RATES, tariff_doc

PUB = sd.load_public_keys(KEYS)
T = Tariff(sd.verify(tariff_doc(), PUB, "tariff", "o1"))
postcodes = st.text(alphabet="0123456789", min_size=6, max_size=6)


def test_worked_examples() -> None:
    # 550001 (Guiyang): z1; 550101: z2 by the longer 5501 prefix; 100000 (Beijing): z2; 830000: default z3
    assert T.quote("standard", "550001", 1).fen == 800
    assert T.quote("standard", "550001", 1000).fen == 800
    assert T.quote("standard", "550001", 1001).fen == 1200
    assert T.quote("standard", "550101", 1000).zone == "z2"
    assert T.quote("standard", "100000", 3000).fen == 1600
    assert T.quote("standard", "830000", 3001).fen == 2000 + 700  # one started step
    assert T.quote("standard", "830000", 5000).fen == 2000 + 2 * 700
    assert T.quote("standard", "830000", 5001).fen == 2000 + 3 * 700
    assert T.quote("charity", "550001", 800).fen == 0  # 公益包裹 free within the province here
    assert T.quote("charity", "830000", 2500).fen == 500 + 2 * 300


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["standard", "charity"]), postcodes, st.integers(1, 20000), st.integers(0, 20000))
def test_postage_is_integer_fen_and_never_falls_as_weight_grows(service: str, pc: str, w: int, more: int
                                                                ) -> None:
    q1 = T.quote(service, pc, w)
    q2 = T.quote(service, pc, min(w + more, T.rates[service].max_g))
    assert type(q1.fen) is int and q1.fen >= 0
    assert q2.fen >= q1.fen


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5000), st.integers(0, 5000)), min_size=1, max_size=6),
       st.integers(1, 5000), st.integers(0, 5000), st.integers(1, 60000))
def test_any_valid_tariff_gives_the_first_band_then_steps(bands, step_g: int, step_fen: int, w: int) -> None:  # type: ignore[no-untyped-def]
    ups, fens, up, fen = [], [], 0, 0
    for dup, dfen in bands:
        up += dup
        fen += dfen
        ups.append(up)
        fens.append(fen)
    rates = {"standard": {"bands": [{"up_to_g": u, "fen": {"z": f}} for u, f in zip(ups, fens, strict=True)],
                          "step_g": step_g, "step_fen": {"z": step_fen}, "max_g": 100000}}
    t = Tariff(sd.verify(tariff_doc(rates=rates, zones={"default": "z"}), PUB, "tariff", "o1"))
    got = postage(t.rates["standard"], "z", w)
    if w <= ups[-1]:
        assert got == fens[next(i for i, u in enumerate(ups) if w <= u)]
    else:
        steps = (w - ups[-1] + step_g - 1) // step_g
        assert got == fens[-1] + steps * step_fen
        assert (steps - 1) * step_g < w - ups[-1] <= steps * step_g


@pytest.mark.parametrize("service,pc,w,reason", [
    ("standard", "550001", 0, "bad_weight"), ("standard", "550001", -5, "bad_weight"),
    ("standard", "550001", 40001, "over_tariff_max"), ("standard", "550001", 10**18, "over_tariff_max"),
    ("charity", "550001", 20001, "over_tariff_max"), ("express", "550001", 1, "unknown_service"),
    ("standard", "55000", 1, "bad_postcode"), ("standard", "５５０００１", 1, "bad_postcode"),
    ("standard", "55000a", 1, "bad_postcode"), ("standard", "5500011", 1, "bad_postcode"),
])
def test_refusals(service: str, pc: str, w: int, reason: str) -> None:
    with pytest.raises(PostageError) as e:
        T.quote(service, pc, w)
    assert e.value.reason == reason


def test_a_bool_is_not_a_weight() -> None:
    with pytest.raises(PostageError):
        T.quote("standard", "550001", True)


def _bad(mutate) -> None:  # type: ignore[no-untyped-def]
    rates = copy.deepcopy(RATES)
    zones = {"default": "z3", "by_prefix": {"55": "z1"}}
    mutate(rates, zones)
    doc = sd.verify(tariff_doc(rates=rates, zones=zones), PUB, "tariff", "o1")
    with pytest.raises(sd.DocError) as e:
        Tariff(doc)
    assert e.value.reason == "bad_body"


@pytest.mark.parametrize("mutate", [
    lambda r, z: r["standard"]["bands"][1].__setitem__("up_to_g", 500),  # bands not ascending
    lambda r, z: r["standard"]["bands"][1]["fen"].__setitem__("z1", 100),  # cheaper when heavier
    lambda r, z: r["standard"]["bands"][0]["fen"].__setitem__("z1", -1),
    lambda r, z: r["standard"]["bands"][0]["fen"].__setitem__("z1", 10**9),
    lambda r, z: r["standard"]["bands"][0]["fen"].pop("z2"),  # a zone left unpriced
    lambda r, z: r["standard"].__setitem__("step_g", 0),
    lambda r, z: r["charity"]["step_fen"].pop("z3"),
    lambda r, z: r.pop("standard"),
    lambda r, z: r.__setitem__("express", r["standard"]),
    lambda r, z: z.__setitem__("default", "z9"),
    lambda r, z: z["by_prefix"].__setitem__("5", "z1"),
    lambda r, z: z["by_prefix"].__setitem__("55", "z9"),
])
def test_tariffs_that_make_postage_ill_defined_are_refused(mutate) -> None:  # type: ignore[no-untyped-def]
    _bad(mutate)

"""The published leaderboard.json carries PUBLISHED_DIGITS significant digits, so a re-render on another CPU
(whose BLAS / libm round the last bits of a double differently) gives the same bytes."""

import json

from bench.leaderboard import PUBLISHED_DIGITS, published_precision


def test_last_bit_differences_vanish():
    # the values the publish check disagreed on between an AMD EPYC and an Intel Xeon
    a = {"delong_z": -2.308333750486356, "p": [0.0209761234567891, None], "n": 3, "ok": True, "s": "x"}
    b = {"delong_z": -2.3083337504863564, "p": [0.02097612345678913, None], "n": 3, "ok": True, "s": "x"}
    assert json.dumps(published_precision(a)) == json.dumps(published_precision(b))
    assert published_precision(a)["delong_z"] == -2.30833
    assert published_precision(a)["n"] == 3 and published_precision(a)["ok"] is True


def test_precision_is_significant_digits():
    assert PUBLISHED_DIGITS == 6
    assert published_precision(1.23456789e-7) == 1.23457e-07
    assert published_precision(123456.789) == 123457.0
    assert published_precision([0.5, 1.0]) == [0.5, 1.0]

"""clean_token (transport/base.py), the log records' form of a request id or executed version: its
fast path for a token that is already clean gives what the regular expression gives, over
generated values."""

import random
import re

from vmod_lambda.transport.base import clean_token

TOKEN = re.compile(r"[^A-Za-z0-9._:$/+=-]")
ALLOWED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:$/+=-"


def reference(value):
    return TOKEN.sub("_", str(value))[:128] if value else "-"


def test_clean_token_is_the_regular_expression_s_over_generated_values():
    rng = random.Random(5)
    alphabet = ALLOWED * 3 + " \t\r\n\x00\x1b\u00e9\u2028_[]\\^`{}~!@#%&*()\"'"
    for _ in range(50000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 140)))
        assert clean_token(value) == reference(value), repr(value)
    for value in (None, "", 0, 7, b"x y", "$LATEST", "a" * 200, "0b7c1a5e-1111-2222-3333-444455556666"):
        assert clean_token(value) == reference(value)

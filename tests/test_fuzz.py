"""Property-based: random CSV text and random params never crash the validator.

Either the input is accepted, or a UserError says what is wrong; any other exception is a bug.
"""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnn_factory.config import parse_params
from cnn_factory.data.table import check_columns, read_table
from cnn_factory.errors import UserError
from tests.conftest import tiny_params

BASE = tiny_params()
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 300),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.lists(st.integers(-2, 70), max_size=3),
)
values = st.recursive(scalars, lambda inner: st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


@st.composite
def mutated_params(draw):
    params = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from(sorted(params)))
        target = params[section]
        if isinstance(target, dict) and target and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(target)))
            inner = target[key]
            if isinstance(inner, dict) and inner:
                inner[draw(st.sampled_from(sorted(inner)))] = draw(values)
            else:
                target[key] = draw(values)
        else:
            params[section] = draw(values)
    return params


@settings(max_examples=300, deadline=None)
@given(mutated_params())
def test_random_params_are_accepted_or_rejected_with_a_message(params):
    try:
        parse_params(params)
    except UserError as err:
        assert str(err).startswith("params.yaml: ")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.sampled_from(list('ab,;\t3"\r\n\ufeff é.png/') + ["image", "labels", "majority"]), max_size=60).map(
        "".join
    )
)
def test_random_csv_text_is_accepted_or_rejected_with_a_message(tmp_path, text):
    path = tmp_path / "fuzz.csv"
    path.write_bytes(text.encode("utf-8"))
    try:
        table = read_table(str(path))
        check_columns(table, parse_params(copy.deepcopy(BASE)))
    except UserError as err:
        assert str(err)

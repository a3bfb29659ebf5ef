"""The tools' command lines are built from their settings dataclasses: every field's type parses."""

from __future__ import annotations

import pytest

from tools.bench.profile import Profile
from tools.cli import parse


def test_a_tuple_of_choices_takes_several_values_and_refuses_others(capsys):
    settings = parse(Profile, ["--precisions", "int8", "fp32", "--rows", "7"], Profile.__doc__)
    assert settings.precisions == ("int8", "fp32") and settings.rows == 7
    assert parse(Profile, [], Profile.__doc__).precisions == ("int8", "fp32")  # the default stands
    with pytest.raises(SystemExit):
        parse(Profile, ["--precisions", "int4"], Profile.__doc__)
    assert "invalid choice: 'int4'" in capsys.readouterr().err

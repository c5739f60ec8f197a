"""Config files a fuzzer wrote: every one is a readable ConfigError, never a traceback (issue 14).

Found by tests/fuzz/run.py: a mapping or a list used as a mapping key crashed the loader's
duplicate-key check with `TypeError: unhashable type`.
"""
from __future__ import annotations

import pytest

from pipeline.config.loader import load_text
from pipeline.errors import ConfigError
from tests.testdata.fakes import factories


@pytest.mark.parametrize("text", [
    "a: [1, {b: &x c}: [1, {b:1e309 &x c}, *x]\n, *x]\n",  # the fuzzer's input, as found
    "{a: 1}: x\n",
    "? [1, 2]\n: x\n",
    "receivers:\n  {otlp: 1}: {}\n",
])
def test_a_non_scalar_mapping_key_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_text(text, factories(), {})
    assert "invalid YAML" in str(err.value) and "key" in str(err.value)

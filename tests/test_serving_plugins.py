"""Third-party runtimes plug in through the Python entry point group ``civicml.runtimes``."""

from __future__ import annotations

import sys
import textwrap

import pytest

from civicml.errors import NotFound
from serving import get_runtime, runtime_names


@pytest.fixture
def plugin_on_path(tmp_path, monkeypatch):
    """A real installed-looking distribution (dist-info with entry_points.txt) on sys.path."""
    (tmp_path / "civicml_echo_runtime.py").write_text(textwrap.dedent('''
        from serving import Runtime


        class EchoRuntime(Runtime):
            name = "echo"

            def load(self):
                self.signature = None

            def predict(self, data, params=None):
                return data
    '''))
    dist = tmp_path / "civicml_echo_runtime-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: civicml-echo-runtime\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[civicml.runtimes]\necho = civicml_echo_runtime:EchoRuntime\n"
                                           "ghost = civicml_no_such_module:Nothing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("civicml_echo_runtime", None)


def test_runtimes_from_entry_points(plugin_on_path):
    assert {"echo", "ghost", "pyfunc"} <= set(runtime_names())
    runtime = get_runtime("echo", model=None)
    runtime.load()
    assert runtime.name == "echo" and runtime.predict([1, 2]) == [1, 2]
    with pytest.raises(NotFound, match="runtime 'ghost'.*could not be imported"):
        get_runtime("ghost", model=None)
    with pytest.raises(NotFound, match="unknown runtime 'int4'"):
        get_runtime("int4", model=None)

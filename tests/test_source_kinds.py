"""A source kind is one plugin (vlalert/sources/<kind>.py) and the registry is the one list of them.

Everything else per kind (the kinds the config accepts, their fps, the layout checks and where to get
each source, the default annotation files, the demo writers) is derived from the plugins, or checked
against them when it cannot be derived (the config validates `kind:` before any adapter is imported).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from vlalert import source_files
from vlalert.config import SOURCE_KINDS, ConfigError, SourceConfig, validate_config
from vlalert.download import check_source_layout
from vlalert.sources import dad, dada2000, dota, nexar
from vlalert.sources.plugin import SourceKind
from vlalert.sources.registry import ADAPTERS, KIND_FPS, KINDS, adapter_for
from vlalert.sources.synthetic import DEMOS

PACKAGE = Path(__file__).resolve().parents[1] / "vlalert"
MODULES = {"nexar": nexar, "dada2000": dada2000, "dota": dota, "dad": dad}


def test_the_config_accepts_exactly_the_registry_kinds():
    assert KINDS == SOURCE_KINDS == tuple(MODULES)
    assert get_args(SourceConfig.model_fields["kind"].annotation) == KINDS
    for kind in KINDS:
        assert SourceConfig(kind=kind, root="r").kind == kind
    raw = {"demo": {"enabled": False}, "sources": {"x": {"kind": "kitti", "root": "r"}}}
    with pytest.raises(ConfigError, match="sources.x.kind"):
        validate_config(raw)


def test_each_kind_is_one_plugin_in_its_adapter_module():
    for kind, module in MODULES.items():
        plugin = ADAPTERS[kind]
        assert adapter_for(kind) is plugin and issubclass(plugin, SourceKind) and plugin.KIND == kind
        assert plugin.__module__ == module.__name__ == f"vlalert.sources.{kind}"
        # the facts are the module's own, not copies
        for fact in ("FPS", "CONSENSUS_CLOCK_FPS", "PEER_TEST_SPLITS", "DEFAULT_FILES", "OBTAIN"):
            assert getattr(plugin, fact) is getattr(module, fact), (kind, fact)
        for method in ("read_annotations", "check_layout", "media_folders"):
            assert getattr(plugin, method) is getattr(module, method), (kind, method)


def test_derived_tables_follow_the_plugins():
    assert KIND_FPS == {kind: MODULES[kind].FPS for kind in KINDS}
    assert KIND_FPS == {"nexar": 30.0, "dada2000": 30.0, "dota": 10.0, "dad": 20.0}
    assert tuple(DEMOS) == KINDS and all(DEMOS[k].source is ADAPTERS[k] for k in KINDS)
    assert nexar.DEFAULT_FILES == ("train.csv", "test-public.csv", "test-private.csv")
    assert dota.DEFAULT_FILES == ("metadata_train.json", "metadata_val.json")
    assert dad.DEFAULT_FILES == ()


def test_the_layout_check_and_the_listing_ask_the_plugin(tmp_path):
    for kind in KINDS:
        src = SourceConfig(kind=kind, root=str(tmp_path / kind))
        report = check_source_layout(kind, src)
        assert report.problems and all(p.obtain == ADAPTERS[kind].OBTAIN for p in report.problems)
        defaults = [str(tmp_path / kind / name) for name in ADAPTERS[kind].DEFAULT_FILES]
        assert [str(p) for p in ADAPTERS[kind].annotation_candidates(src)] == defaults
        for name in ADAPTERS[kind].DEFAULT_FILES:  # each default file is listed once present
            (tmp_path / kind).mkdir(exist_ok=True)
            (tmp_path / kind / name).write_text("x")
        assert source_files.annotation_files(src) == defaults
    with pytest.raises(ValueError, match=r"known: \['dad', 'dada2000', 'dota', 'nexar'\]"):
        check_source_layout("x", SourceConfig.model_construct(kind="kitti", root=str(tmp_path)))


def test_consensus_ids_are_mapped_by_the_plugin():
    assert adapter_for("dad").consensus_video_id("000456") == "testing-positive-000456"
    assert adapter_for("nexar").consensus_video_id("12") == "00012"
    for kind in ("dota", "dada2000"):
        assert adapter_for(kind).consensus_video_id("10_068") == "10_068"


def test_the_registry_refuses_a_kind_list_that_differs_from_the_config():
    code = (
        "import vlalert.config as c; c.SOURCE_KINDS = ('nexar', 'dada2000', 'dota'); "
        "import vlalert.sources.registry"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert "differ from those the config accepts" in res.stderr


def test_kind_names_are_written_only_where_a_kind_is_defined():
    """A kind's name as a string appears in its plugin, the config's literal and the demo's per-kind
    random streams; anywhere else it would be a second place for a fact of the kind."""
    allowed = {f"sources/{kind}.py" for kind in KINDS} | {"config.py", "sources/synthetic.py"}
    found = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in KINDS and rel not in allowed:
                found.add(f"{rel}:{node.lineno}: {node.value!r}")
    assert sorted(found) == []

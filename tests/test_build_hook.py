"""`hatch_build.py`: the wheel gets the C numeric encoder where a compiler is, and is built
without it (pure Python, psycopg's encoder in use) where none is."""

from __future__ import annotations

import importlib.util
import shutil
import sysconfig
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.adapt import PyFormat

from hatch_build import SOURCE, CustomBuildHook, compile_extension

ROOT = Path(__file__).resolve().parents[1]
NAME = "_numeric" + sysconfig.get_config_var("EXT_SUFFIX")
needs_compiler = pytest.mark.skipif(
    shutil.which((sysconfig.get_config_var("LDSHARED") or "cc").split()[0]) is None,
    reason="no C compiler here",
)


def hook(root: Path, directory: Path) -> CustomBuildHook:
    return CustomBuildHook(str(root), {}, None, None, str(directory), "wheel")  # type: ignore[arg-type]


def checkout_with_the_source(tmp_path: Path) -> Path:
    checkout = tmp_path / "checkout"
    (checkout / SOURCE.parent).mkdir(parents=True)
    shutil.copy(ROOT / SOURCE, checkout / SOURCE)
    return checkout


def build_data() -> dict[str, Any]:
    return {"force_include": {}, "pure_python": True, "infer_tag": False}


@needs_compiler
def test_the_module_compiled_encodes_as_psycopg(tmp_path: Path) -> None:
    target = tmp_path / NAME
    assert compile_extension(ROOT / SOURCE, target) is None
    spec = importlib.util.spec_from_file_location("recorder.storage._numeric", target)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    psycopg_dumper = psycopg.adapters.get_dumper(Decimal, PyFormat.BINARY)(Decimal)
    module.configure(Decimal, psycopg_dumper.dump)
    for text in ("904.123", "-0.00012300", "1E-8", "NaN"):
        assert module.dump(Decimal(text)) == bytes(psycopg_dumper.dump(Decimal(text)))


@needs_compiler
def test_a_wheel_carries_the_module_and_an_editable_install_puts_it_by_its_source(
    tmp_path: Path,
) -> None:
    data = build_data()
    hook(ROOT, tmp_path).initialize("standard", data)
    ((built, inside),) = data["force_include"].items()
    assert inside == f"recorder/storage/{NAME}"
    assert Path(built).is_file()
    assert (data["pure_python"], data["infer_tag"]) == (False, True)

    checkout = checkout_with_the_source(tmp_path)
    data = build_data()
    hook(checkout, tmp_path).initialize("editable", data)
    assert (checkout / SOURCE.parent / NAME).is_file()
    assert data["force_include"] == {}  # imported from the checkout itself


def test_without_a_compiler_the_wheel_is_built_without_the_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = sysconfig.get_config_var

    def no_compiler(name: str) -> Any:
        return "no-such-compiler -shared" if name == "LDSHARED" else real(name)

    monkeypatch.setattr(sysconfig, "get_config_var", no_compiler)
    checkout = checkout_with_the_source(tmp_path)
    (checkout / SOURCE.parent / NAME).write_bytes(b"an old build")  # must not survive
    data = build_data()
    hook(checkout, tmp_path).initialize("editable", data)
    assert data == build_data()
    assert not (checkout / SOURCE.parent / NAME).exists()
    assert "not compiled" in capsys.readouterr().err

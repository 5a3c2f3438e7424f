"""Fetching published weights: the local caches first, then the network, failing within seconds when it is down.

torchvision's weights come through the torch hub cache
(``$TORCH_HOME/hub/checkpoints``); smp's and timm's through the Hugging Face
cache (``$HF_HOME/hub``). A file already in its cache is used without touching
the network (Hugging Face is put in offline mode for the call, so it makes no
revision checks either). Otherwise a 3-second connection probe runs first:
Hugging Face's client retries an unreachable host for about 25 s and
``urllib`` waits on a dead connection for the system timeout, so without the
probe an offline machine would hang before failing. Every failure becomes a
:class:`SemsegError` naming the address and saying how to supply the file.
"""

from __future__ import annotations

import contextlib
import os
import socket
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TypeVar
from urllib.parse import urlparse

from semseg.errors import SemsegError

T = TypeVar("T")
PROBE_TIMEOUT_S = 3.0
# per socket operation once connected: a stalled download fails instead of hanging
SOCKET_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class WeightSource:
    """Where published weights live: ``url`` (named in errors), whether they are ``cached``, and the offline ``hint``."""

    url: str
    cached: bool
    hint: str


def torch_hub_file(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` keeps the file of ``url``."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def torch_hub_source(url: str) -> WeightSource:
    path = torch_hub_file(url)
    return WeightSource(url, path.is_file(), f"copy the file to {path} (the torch hub cache; TORCH_HOME moves it)")


def _hf_cached(repo_id: str, filename: str, revision: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, filename, revision=revision), str)


def _hf_hint(repo_id: str) -> str:
    from huggingface_hub import constants

    return (f"on a machine with internet run `hf download {repo_id}` and copy its Hugging Face cache "
            f"to {constants.HF_HUB_CACHE} (HF_HOME or HF_HUB_CACHE move it)")


def hf_source(repo_id: str, filenames: tuple[str, ...], revision: str | None = None) -> WeightSource:
    """Weights in Hugging Face repository ``repo_id``: cached when every file of ``filenames`` is."""
    from huggingface_hub import constants

    cached = all(_hf_cached(repo_id, name, revision) for name in filenames)
    return WeightSource(f"{constants.ENDPOINT}/{repo_id}", cached, _hf_hint(repo_id))


def timm_source(model_name: str) -> WeightSource:
    """The ImageNet weights ``timm.create_model(model_name, pretrained=True)`` loads."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(model_name)
    if cfg is None:
        raise SemsegError(f"timm has no pretrained weights for {model_name!r}; use pretrained=False")
    if cfg.hf_hub_id:
        from huggingface_hub import constants

        repo_id, _, revision = cfg.hf_hub_id.partition("@")
        # timm reads model.safetensors, or the pickle where an older upload holds only that
        names = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else ("model.safetensors", "pytorch_model.bin")
        cached = any(_hf_cached(repo_id, name, revision or None) for name in names)
        return WeightSource(f"{constants.ENDPOINT}/{repo_id}", cached, _hf_hint(repo_id))
    if cfg.url:
        return torch_hub_source(cfg.url)
    raise SemsegError(f"timm has no pretrained weights for {model_name!r}; use pretrained=False")


def network_reachable(url: str) -> bool:
    """Whether a TCP connection to ``url``'s host opens within 3 s (assumed yes behind a proxy)."""
    parsed = urlparse(url)
    if parsed.scheme in urllib.request.getproxies():
        return True  # the proxy, not the host, answers: leave it to the library's own timeouts
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _hf_offline(enabled: bool) -> Iterator[None]:
    """Hugging Face's client in offline mode for the block: cached files only, no revision checks."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = enabled or saved
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    saved = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(saved)


def download_errors() -> tuple[type[BaseException], ...]:
    # OSError covers urllib's URLError, requests' errors, socket timeouts and most of
    # Hugging Face's; EntryNotFoundError is Hugging Face's one error outside OSError.
    from huggingface_hub.errors import EntryNotFoundError

    return (OSError, EntryNotFoundError)


def fetch(source: WeightSource, load: Callable[[], T], what: str) -> T:
    """``load()`` (which may download ``source``), or a :class:`SemsegError` saying how to supply it offline."""
    if not source.cached and not network_reachable(source.url):
        raise SemsegError(offline_message(what, source, "cannot connect (offline?)"))
    try:
        with _hf_offline(source.cached), _socket_timeout(SOCKET_TIMEOUT_S):
            return load()
    except download_errors() as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SemsegError(offline_message(what, source, reason)) from None


def offline_message(what: str, source: WeightSource, reason: str) -> str:
    return (
        f"could not download {what} from {source.url}: {reason}. To use them offline, {source.hint}; "
        "or pass pretrained='/path/to/weights.pth' (a state dict of the whole model), or pretrained=False"
    )

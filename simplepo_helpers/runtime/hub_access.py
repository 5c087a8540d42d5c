"""One clear message when a Hub model or dataset cannot be fetched because the Hub is out of reach.

``with hub_access("model", repo_id): AutoModel.from_pretrained(repo_id)``: offline mode, no network or an
empty cache becomes `HubUnavailableError` (a ``ConnectionError``) saying what to do, instead of the
libraries' chained tracebacks. A wrong id, a gated model or a local path keeps its own error. Used by
``scale.hub`` (the ``gpu`` profile, the entry point) and available to ``evaluation`` (the reward-model judge).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name; anything else is a local path
_UNREACHABLE = {
    "LocalEntryNotFoundError",
    "OfflineModeIsEnabled",
    "ConnectError",
    "ConnectTimeout",
    "gaierror",
}


class HubUnavailableError(ConnectionError):
    """A Hub model or dataset could not be fetched because the Hub is out of reach; the message says what to do."""


def _unreachable(error: BaseException | None) -> bool:
    """True when the error (or one it came from) is the Hub being out of reach rather than a wrong id."""
    seen = 0
    while error is not None and seen < 20:
        if isinstance(error, ConnectionError) or type(error).__name__ in _UNREACHABLE:
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


@contextlib.contextmanager
def hub_access(what: str, repo_id: str) -> Iterator[None]:
    """Turn "the Hub is unreachable" while fetching ``repo_id`` (a Hub id, not a local folder) into one message."""
    try:
        yield
    except Exception as error:
        if Path(repo_id).exists() or not HUB_ID.match(repo_id) or not _unreachable(error):
            raise
        from huggingface_hub import constants

        why = (
            "offline mode is on (HF_HUB_OFFLINE=1)"
            if constants.HF_HUB_OFFLINE
            else "https://huggingface.co could not be reached"
        )
        raise HubUnavailableError(
            f"The {what} {repo_id!r} is not in the local Hugging Face cache and {why}, so it cannot be "
            "downloaded. To use it: connect to the internet (and unset HF_HUB_OFFLINE), or download it once "
            f"where you have a connection (`hf download {repo_id}`{' --repo-type dataset' if what == 'dataset' else ''}) "
            "and copy the cache (~/.cache/huggingface) here, or point the config at a local folder. To work "
            "offline instead, use profile='cpu' (the kit's own tiny world and its exact judge, no download)."
        ) from None

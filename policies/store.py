"""The live PolicySet: loaded at start-up, reloaded when the file changes, never replaced by a bad file.

Readers take `store.current` once per request and use that object throughout, so a reload in the
middle of a request cannot mix two files' settings; the swap is one attribute assignment.
The watcher compares a hash of the file's bytes rather than its mtime: editors and config-map
updates can keep the mtime (or change it without changing the content), and a hash cannot be fooled.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from policies.loader import PolicyFileError, PolicySet, parse_policy_text

__all__ = ["DEFAULT_POLICY_SOURCE", "PolicyStore", "ReloadCallback", "default_policy_bytes"]

logger = logging.getLogger(__name__)

DEFAULT_POLICY_SOURCE = "<built-in default policies>"

# on_reload(ok, error message): called after every reload attempt, e.g. to count reloads in a metric.
ReloadCallback = Callable[[bool, str | None], None]


def default_policy_bytes() -> bytes:
    """The shipped default policy file (package data; deploy/policies.yaml is a copy)."""
    return resources.files("policies").joinpath("default.yaml").read_bytes()


class PolicyStore:
    """Holds the current PolicySet for `path`, or the built-in default when path is None."""

    def __init__(self, path: str | Path | None, on_reload: ReloadCallback | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._on_reload = on_reload
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reload_lock = threading.Lock()
        # The first load raises: a server must not start with an invalid policy file.
        data = self._read()
        self._current = self._parse(data)
        self._seen_digest: str | None = _digest(data)

    @property
    def _source(self) -> str:
        return str(self.path) if self.path is not None else DEFAULT_POLICY_SOURCE

    @property
    def current(self) -> PolicySet:
        return self._current

    def _read(self) -> bytes:
        if self.path is None:
            return default_policy_bytes()
        try:
            return self.path.read_bytes()
        except OSError as err:
            problem = ("", f"cannot read policy file: {err.strerror or err}")
            raise PolicyFileError(self._source, [problem]) from None

    def _parse(self, data: bytes) -> PolicySet:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise PolicyFileError(self._source, [("", f"not UTF-8 text: {err}")]) from None
        return parse_policy_text(text, self._source)

    def _notify(self, ok: bool, message: str | None) -> None:
        if self._on_reload is None:
            return
        try:
            self._on_reload(ok, message)
        except Exception:  # a broken callback must not stop reloads (or kill the watcher thread)
            logger.exception("policy reload callback failed")

    def _swap(self) -> PolicyFileError | None:
        try:
            data = self._read()
        except PolicyFileError as err:
            self._seen_digest = None  # a missing file is reported once, not on every poll
            return err
        # Remember what was tried even if it is invalid: the watcher retries only after the next edit.
        self._seen_digest = _digest(data)
        try:
            self._current = self._parse(data)
        except PolicyFileError as err:
            return err
        return None

    def reload(self) -> bool:
        """Re-read the file; swap it in if valid. An invalid file is logged and the old policies stay."""
        with self._reload_lock:
            err = self._swap()
        # Callbacks run outside the lock, so one may call reload() itself.
        if err is not None:
            logger.error("policy file not reloaded, keeping the previous policies:\n%s", err)
            self._notify(False, str(err))
            return False
        logger.info("policies reloaded from %s", self._source)
        self._notify(True, None)
        return True

    def _changed(self) -> bool:
        try:
            digest = _digest(self._read())
        except PolicyFileError:
            digest = None  # missing or unreadable: reload() reports it once, then waits for a change
        return digest != self._seen_digest

    def _watch(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            if self._changed():
                self.reload()

    def start_watching(self, interval_s: float = 1.0) -> None:
        """Poll the file every `interval_s` seconds in a daemon thread and reload when its content changes."""
        if self.path is None or self._thread is not None:
            return  # the built-in default cannot change; watching twice would reload twice
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._watch, args=(interval_s,), name="policy-watcher", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

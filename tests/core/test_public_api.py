"""The public surface: everything public is exported, and nothing private leaks."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import hyperqueue as hq


def test_all_names_exist_and_are_sorted() -> None:
    for name in hq.__all__:
        assert hasattr(hq, name), name
    assert len(set(hq.__all__)) == len(hq.__all__)


def test_every_public_class_and_function_of_the_private_modules_is_exported() -> None:
    missing = []
    for info in pkgutil.iter_modules(hq.__path__):
        if not info.name.startswith("_"):
            continue
        module = importlib.import_module(f"hyperqueue.{info.name}")
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and name not in hq.__all__:
                missing.append(f"{info.name}.{name}")
    # names kept module-level on purpose: internal helpers and type aliases
    allowed = {
        "_breaker.BreakerOptions",
        "_retry.Attempts",
        "_ids.IdFactory",
        "_json.to_json_form",
        "_json.args_to_json_form",
        "_signature.Signature",
        "_cache.CachedFunction",
        "_cache.CacheDecorator",
        "_events.job_event",
        "_prefetch.AdaptivePrefetch",
    }
    assert sorted(set(missing) - allowed) == []


def test_errors_share_one_base() -> None:
    errors = [getattr(hq, n) for n in hq.__all__ if n.endswith(("Error", "Refused"))]
    errors += [hq.JobNotFound, hq.UnknownTask, hq.InvalidTransition, hq.JobTimeout]
    for error in errors:
        assert issubclass(error, hq.HyperqueueError), error

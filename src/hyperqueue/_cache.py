"""An in-process cache: TTL from the injected clock, one LRU bound, namespaces, tags,
invalidation driven by events, and single-flight loading against stampedes.

Why these choices:

- One memory bound for the whole cache. Namespaces are separate key spaces (and separate
  figures), but they share ``max_entries`` and one least-recently-used order, so adding a
  namespace never adds memory and a busy namespace can push out a cold one's entries.
- A hit is a few dict operations: one lookup, one expiry comparison, one
  ``OrderedDict.move_to_end`` on the entry itself (hashed by identity, so no key is hashed
  twice) and one counter. The clock is read once per hit: about 45 ns of a hit of about
  200 ns, measured in ``benchmarks/bench_cache.py``; a coarser clock would need a
  background task and would make the fake clock lie.
- Expired entries are dropped when they are touched or when the bound pushes them out
  (counted as expirations, not evictions); :meth:`Cache.expire` sweeps them all at once.
- A load that was in flight while its key was invalidated (delete, prefix, tag, event,
  clear, or a newer ``set``) still answers its callers but is not stored: it may have read
  the data from before the mutation.

Nothing here is thread-safe: like the rest of the core, a cache belongs to one event loop.
"""

from __future__ import annotations

import functools
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any, ParamSpec, Protocol, TypeVar, overload

import anyio
import msgspec

from ._clock import Clock, SystemClock
from ._events import Event, EventBus

__all__ = ["Cache", "CacheDecorator", "CacheNamespace", "CacheStats", "CachedFunction", "cached"]

T = TypeVar("T")
E = TypeVar("E", bound=Event)
P = ParamSpec("P")

DEFAULT_NAMESPACE = "default"
_MISSING: Any = object()


class CacheStats(msgspec.Struct, frozen=True, kw_only=True):
    """Figures of a cache or of one namespace, counted since it was created.

    ``misses`` counts every lookup that found no fresh value (an expired one included);
    ``loads`` counts loader calls made by :meth:`CacheNamespace.get_or_set`, and
    ``coalesced`` the callers that waited for another caller's load instead of calling the
    loader themselves: the stampede that did not happen. ``size`` includes expired entries
    not dropped yet. On a :class:`Cache`, ``namespaces`` holds the same figures per
    namespace (the default one is ``"default"``) and the top-level figures are their sums.
    """

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    expirations: int = 0
    invalidations: int = 0
    loads: int = 0
    load_errors: int = 0
    coalesced: int = 0
    size: int = 0
    max_entries: int = 0
    namespaces: dict[str, CacheStats] = {}

    @property
    def hit_ratio(self) -> float:
        """Hits over lookups, 0.0 before the first lookup."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


class _Entry:
    """One cached value; hashed by identity so it can key the shared LRU order."""

    __slots__ = ("expires", "key", "space", "tags", "value")

    def __init__(
        self,
        key: Hashable,
        value: Any,
        expires: float,
        space: CacheNamespace,
        tags: tuple[str, ...],
    ) -> None:
        self.key = key
        self.value = value
        self.expires = expires
        self.space = space
        self.tags = tags


class _Flight:
    """A load in progress: the callers who missed the same key wait on ``done``."""

    __slots__ = ("done", "error", "ok", "stale", "tags", "value")

    def __init__(self, tags: tuple[str, ...]) -> None:
        self.done = anyio.Event()
        self.tags = tags
        self.value: Any = None
        self.error: Exception | None = None
        self.ok = False
        self.stale = False


def _checked_ttl(ttl: float) -> float:
    if not ttl > 0:  # also refuses NaN
        raise ValueError(f"ttl must be a number of seconds > 0 (math.inf: never), not {ttl!r}")
    return float(ttl)


class CacheNamespace:
    """One key space of a :class:`Cache`: keys, tags and figures of its own, the cache's
    clock, default TTL and memory bound.

    Get one with :meth:`Cache.namespace`; the :class:`Cache` itself is the namespace
    ``"default"``. Keys are any hashable values; prefix invalidation only sees ``str`` keys.
    """

    __slots__ = (
        "_coalesced",
        "_entries",
        "_evictions",
        "_expirations",
        "_flights",
        "_hits",
        "_invalidations",
        "_load_errors",
        "_loads",
        "_lru",
        "_misses",
        "_now",
        "_owner",
        "_tagged",
        "_touch",
        "name",
    )

    def __init__(self, owner: Cache, name: str) -> None:
        self.name = name
        self._owner = owner
        self._entries: dict[Hashable, _Entry] = {}
        self._tagged: dict[str, set[Hashable]] = {}
        self._flights: dict[Hashable, _Flight] = {}
        # The shared LRU order and clock, copied here so a hit does not go through _owner.
        self._lru = owner._lru
        self._touch = owner._lru.move_to_end
        self._now = owner._now
        self._hits = self._misses = self._evictions = self._expirations = 0
        self._invalidations = self._loads = self._load_errors = self._coalesced = 0

    # -- reading ---------------------------------------------------------------------

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The fresh value under ``key``, or ``default``; a hit makes the entry the most
        recently used."""
        entry = self._entries.get(key)
        if entry is not None:
            if entry.expires > self._now():
                self._touch(entry)
                self._hits += 1
                return entry.value
            self._expire(entry)
        self._misses += 1
        return default

    def __contains__(self, key: Hashable) -> bool:
        """Whether a fresh value is there; does not count as a lookup or touch the LRU."""
        entry = self._entries.get(key)
        return entry is not None and entry.expires > self._now()

    def __len__(self) -> int:
        """Entries held in this namespace, expired ones not dropped yet included."""
        return len(self._entries)

    async def get_or_set(
        self,
        key: Hashable,
        loader: Callable[[], Awaitable[T]],
        *,
        ttl: float | None = None,
        tags: Iterable[str] = (),
    ) -> T:
        """The fresh value under ``key``; on a miss, ``await loader()`` and store its result.

        Concurrent misses of one key call the loader once: the first caller loads, the
        others wait for its result. If the loader raises, every waiting caller gets the
        same exception and nothing is stored. If the loading caller is cancelled, a
        waiting caller takes over and calls the loader itself. A hit does not yield to
        the event loop.
        """
        entry = self._entries.get(key)
        if entry is not None:
            if entry.expires > self._now():
                self._touch(entry)
                self._hits += 1
                return entry.value  # type: ignore[no-any-return]
            self._expire(entry)
        self._misses += 1
        return await self._load(key, loader, ttl, tags)

    async def _load(
        self,
        key: Hashable,
        loader: Callable[[], Awaitable[T]],
        ttl: float | None,
        tags: Iterable[str],
    ) -> T:
        expires_in = self._owner._ttl if ttl is None else _checked_ttl(ttl)
        tag_tuple = tuple(tags) if tags else ()
        while (flight := self._flights.get(key)) is not None:
            self._coalesced += 1
            await flight.done.wait()
            if flight.ok:
                return flight.value  # type: ignore[no-any-return]
            if flight.error is not None:
                raise flight.error
            # The loading caller was cancelled: take over, unless someone already has.
            entry = self._entries.get(key)
            if entry is not None and entry.expires > self._now():
                self._touch(entry)
                return entry.value  # type: ignore[no-any-return]

        flight = self._flights[key] = _Flight(tag_tuple)
        self._loads += 1
        try:
            value = await loader()
        except BaseException as exc:
            if isinstance(exc, Exception):  # a loader's error is data for every waiter
                flight.error = exc
                self._load_errors += 1
            del self._flights[key]
            flight.done.set()  # wakes the waiters on error and on cancellation alike
            raise
        del self._flights[key]
        flight.value = value
        flight.ok = True
        if not flight.stale:  # the flight is gone, so set() does not mark it stale
            self.set(key, value, ttl=expires_in, tags=tag_tuple)
        flight.done.set()
        return value

    # -- writing ---------------------------------------------------------------------

    def set(
        self, key: Hashable, value: Any, *, ttl: float | None = None, tags: Iterable[str] = ()
    ) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (the cache's default when
        ``None``; ``math.inf`` never expires), tagged with ``tags`` for
        :meth:`invalidate_tags`. Replaces the key's previous value and tags; a load of
        ``key`` in flight will not overwrite it."""
        if self._flights:
            self._stale_key(key)
        expires = self._now() + (self._owner._ttl if ttl is None else _checked_ttl(ttl))
        tags = tuple(tags) if tags else ()
        entry = self._entries.get(key)
        if entry is not None:  # reuse the entry: no allocation, one LRU move
            if entry.tags != tags:
                if entry.tags:
                    self._untag(entry)
                entry.tags = tags
                if tags:
                    self._tag(key, tags)
            entry.value = value
            entry.expires = expires
            self._touch(entry)
            return
        entry = self._entries[key] = _Entry(key, value, expires, self, tags)
        lru = self._lru
        lru[entry] = None
        if tags:
            self._tag(key, tags)
        if len(lru) > self._owner.max_entries:
            self._owner._shrink()

    def _tag(self, key: Hashable, tags: tuple[str, ...]) -> None:
        tagged = self._tagged
        for tag in tags:
            keys = tagged.get(tag)
            if keys is None:
                tagged[tag] = {key}
            else:
                keys.add(key)

    def _untag(self, entry: _Entry) -> None:
        tagged = self._tagged
        for tag in entry.tags:
            keys = tagged.get(tag)
            if keys is not None:
                keys.discard(entry.key)
                if not keys:
                    del tagged[tag]

    def _drop(self, entry: _Entry) -> None:
        """Forget ``entry`` (which must be current) in this namespace and the LRU order."""
        del self._entries[entry.key]
        self._lru.pop(entry, None)
        if entry.tags:
            self._untag(entry)

    def _expire(self, entry: _Entry) -> None:
        self._drop(entry)
        self._expirations += 1

    # -- invalidation ----------------------------------------------------------------

    def delete(self, key: Hashable) -> bool:
        """Remove ``key``; returns whether a fresh value was removed. A load of ``key``
        in flight will not be stored."""
        if self._flights:
            self._stale_key(key)
        entry = self._entries.get(key)
        if entry is None:
            return False
        if entry.expires > self._now():
            self._drop(entry)
            self._invalidations += 1
            return True
        self._expire(entry)
        return False

    def invalidate_prefix(self, prefix: str) -> int:
        """Remove every ``str`` key that starts with ``prefix``; returns how many.

        Scans this namespace's keys: O(entries in the namespace).
        """
        for key, flight in self._flights.items():
            if isinstance(key, str) and key.startswith(prefix):
                flight.stale = True
        victims = [
            entry
            for key, entry in self._entries.items()
            if isinstance(key, str) and key.startswith(prefix)
        ]
        for entry in victims:
            self._drop(entry)
        self._invalidations += len(victims)
        return len(victims)

    def invalidate_tags(self, *tags: str) -> int:
        """Remove every entry set with any of ``tags``; returns how many.

        Costs O(entries removed), through the tag index.
        """
        wanted = set(tags)
        for flight in self._flights.values():
            if not wanted.isdisjoint(flight.tags):
                flight.stale = True
        removed = 0
        for tag in tags:
            for key in self._tagged.pop(tag, ()):
                entry = self._entries.get(key)
                if entry is not None:
                    self._drop(entry)
                    removed += 1
        self._invalidations += removed
        return removed

    def invalidate_on(
        self,
        bus: EventBus,
        *types: type[E],
        keys: Callable[[E], Iterable[Hashable]] | None = None,
        tags: Callable[[E], Iterable[str]] | None = None,
        prefixes: Callable[[E], Iterable[str]] | None = None,
    ) -> Callable[[], None]:
        """Invalidate, whenever ``bus`` publishes one of ``types`` (any event when none
        are given), the keys, tags and key prefixes the given functions name for it.

        This is how a mutation invalidates what depends on it without the code that
        mutates knowing about the cache. Invalidation runs inline in ``publish``. A
        function that raises is reported by the bus and does not stop the publisher.
        Returns a function that unsubscribes.
        """
        if keys is None and tags is None and prefixes is None:
            raise ValueError("invalidate_on needs keys=, tags= or prefixes= to know what to drop")

        def invalidate(event: E) -> None:
            if keys is not None:
                for key in keys(event):
                    self.delete(key)
            if tags is not None:
                self.invalidate_tags(*tags(event))
            if prefixes is not None:
                for prefix in prefixes(event):
                    self.invalidate_prefix(prefix)

        return bus.subscribe(invalidate, *types)

    def clear(self) -> int:
        """Remove every entry of this namespace; returns how many."""
        for flight in self._flights.values():
            flight.stale = True
        removed = len(self._entries)
        lru = self._lru
        for entry in self._entries.values():
            del lru[entry]
        self._entries.clear()
        self._tagged.clear()
        self._invalidations += removed
        return removed

    def _stale_key(self, key: Hashable) -> None:
        flight = self._flights.get(key)
        if flight is not None:
            flight.stale = True

    def _sweep(self, now: float) -> int:
        expired = [entry for entry in self._entries.values() if entry.expires <= now]
        for entry in expired:
            self._drop(entry)
        self._expirations += len(expired)
        return len(expired)

    # -- figures ---------------------------------------------------------------------

    def stats(self) -> CacheStats:
        """This namespace's figures."""
        return CacheStats(
            hits=self._hits,
            misses=self._misses,
            evictions=self._evictions,
            expirations=self._expirations,
            invalidations=self._invalidations,
            loads=self._loads,
            load_errors=self._load_errors,
            coalesced=self._coalesced,
            size=len(self._entries),
            max_entries=self._owner.max_entries,
        )

    def __repr__(self) -> str:
        return f"<CacheNamespace {self.name!r} entries={len(self._entries)}>"


class Cache(CacheNamespace):
    """A bounded in-memory cache with TTL, namespaces, tags and single-flight loads.

    ``max_entries`` (default 10,000) bounds the entries of all namespaces together; past
    it, the least recently used entry of any namespace goes first. ``ttl`` (default
    300 s; ``math.inf`` for never) is how long a value stays fresh unless ``set`` or
    ``get_or_set`` says otherwise. Time is read from ``clock`` (the system clock by
    default), so a test drives expiry with :class:`hyperqueue.testing.FakeClock`.

    Methods that take a key, a prefix or a tag act on the default namespace; use
    :meth:`namespace` for another one. :meth:`clear`, :meth:`expire`, :meth:`stats` and
    ``len()`` on the cache cover every namespace.
    """

    __slots__ = ("_spaces", "_ttl", "max_entries")

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        ttl: float = 300.0,
        clock: Clock | None = None,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries!r}")
        clock = clock if clock is not None else SystemClock()
        self.max_entries = max_entries
        self._ttl = _checked_ttl(ttl)
        self._lru: OrderedDict[_Entry, None] = OrderedDict()
        # SystemClock.now() is time.time(); calling it directly skips a Python frame,
        # about 20 ns of a hit (measured). Any other clock is asked through its method.
        self._now: Callable[[], float] = time.time if type(clock) is SystemClock else clock.now
        super().__init__(self, DEFAULT_NAMESPACE)
        self._spaces: dict[str, CacheNamespace] = {DEFAULT_NAMESPACE: self}

    def namespace(self, name: str) -> CacheNamespace:
        """The namespace called ``name`` (the same object on every call); its keys never
        collide with another namespace's. ``"default"`` is the cache itself."""
        space = self._spaces.get(name)
        if space is None:
            if not isinstance(name, str) or not name:
                raise ValueError(f"a namespace name is a non-empty str, not {name!r}")
            space = self._spaces[name] = CacheNamespace(self, name)
        return space

    def _shrink(self) -> None:
        """Drop least recently used entries until the bound holds."""
        lru = self._lru
        now = self._now()
        while len(lru) > self.max_entries:
            entry, _ = lru.popitem(last=False)
            space = entry.space
            del space._entries[entry.key]
            if entry.tags:
                space._untag(entry)
            if entry.expires <= now:
                space._expirations += 1
            else:
                space._evictions += 1

    def expire(self) -> int:
        """Drop every expired entry of every namespace now; returns how many.

        Expired entries are otherwise dropped when touched or pushed out by the bound;
        call this (O(entries)) when ``size`` must only count fresh ones.
        """
        now = self._now()
        return sum(space._sweep(now) for space in tuple(self._spaces.values()))

    def clear(self) -> int:
        """Remove every entry of every namespace; returns how many."""
        return sum(CacheNamespace.clear(space) for space in tuple(self._spaces.values()))

    def __len__(self) -> int:
        """Entries held in all namespaces, expired ones not dropped yet included."""
        return len(self._lru)

    def stats(self) -> CacheStats:
        """Figures summed over every namespace, with each namespace's in ``namespaces``."""
        per = {name: CacheNamespace.stats(space) for name, space in self._spaces.items()}
        parts = per.values()
        return CacheStats(
            hits=sum(s.hits for s in parts),
            misses=sum(s.misses for s in parts),
            evictions=sum(s.evictions for s in parts),
            expirations=sum(s.expirations for s in parts),
            invalidations=sum(s.invalidations for s in parts),
            loads=sum(s.loads for s in parts),
            load_errors=sum(s.load_errors for s in parts),
            coalesced=sum(s.coalesced for s in parts),
            size=len(self._lru),
            max_entries=self.max_entries,
            namespaces=per,
        )

    def __repr__(self) -> str:
        return (
            f"<Cache entries={len(self._lru)}/{self.max_entries} ttl={self._ttl} "
            f"namespaces={len(self._spaces)}>"
        )


class CachedFunction(Protocol[P, T]):
    """An async function whose results are cached; see :func:`cached`.

    For a method, ``key`` and ``invalidate`` take the instance first:
    ``Users.get.invalidate(users, 42)``.
    """

    __name__: str
    __qualname__: str
    __wrapped__: Callable[P, Awaitable[T]]

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T: ...

    def key(self, *args: P.args, **kwargs: P.kwargs) -> Hashable:
        """The cache key a call with these arguments uses."""
        ...

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Forget the cached result of a call with these arguments."""
        ...

    # On a class, the cached function binds like a method (typed loosely: a ParamSpec
    # cannot drop the instance parameter).
    @overload
    def __get__(self, instance: None, owner: type[Any], /) -> CachedFunction[P, T]: ...
    @overload
    def __get__(self, instance: object, owner: type[Any], /) -> Callable[..., Awaitable[T]]: ...


class CacheDecorator(Protocol):
    """What :func:`cached` returns: turns an async function into a cached one."""

    def __call__(self, func: Callable[P, Awaitable[T]], /) -> CachedFunction[P, T]: ...


def cached(
    cache: CacheNamespace,
    *,
    ttl: float | None = None,
    key: Callable[..., Hashable] | None = None,
    tags: Callable[..., Iterable[str]] | Iterable[str] = (),
) -> CacheDecorator:
    """Cache an async function's results in ``cache`` (a :class:`Cache` or a namespace),
    with single-flight loading through :meth:`CacheNamespace.get_or_set`.

    The default key is ``(module.qualname, args, tuple(kwargs.items()))``, so every
    argument must be hashable, and calls that spell the same arguments differently
    (positionally, by name, in another order) are cached apart, as with
    ``functools.lru_cache``. ``key`` replaces it: a function of the same arguments, for
    instance ``lambda user_id: f"user:{user_id}"`` for a key that
    :meth:`~CacheNamespace.invalidate_prefix` can find. ``tags`` is a fixed list or a
    function of the arguments. ``ttl`` defaults to the cache's.
    """
    if ttl is not None:
        _checked_ttl(ttl)
    make_tags = tags if callable(tags) else None
    fixed_tags = () if callable(tags) else tuple(tags)

    def decorate(func: Callable[P, Awaitable[T]], /) -> CachedFunction[P, T]:
        name = f"{func.__module__}.{func.__qualname__}"

        def default_key(*args: Any, **kwargs: Any) -> Hashable:
            return (name, args, tuple(kwargs.items())) if kwargs else (name, args)

        make_key = key if key is not None else default_key

        @functools.wraps(func)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            k = make_key(*args, **kwargs)
            value = cache.get(k, _MISSING)
            if value is not _MISSING:
                return value  # type: ignore[no-any-return]
            return await cache._load(
                k,
                functools.partial(func, *args, **kwargs),
                ttl,
                make_tags(*args, **kwargs) if make_tags is not None else fixed_tags,
            )

        def invalidate(*args: P.args, **kwargs: P.kwargs) -> bool:
            return cache.delete(make_key(*args, **kwargs))

        wrapper.key = make_key  # type: ignore[attr-defined]
        wrapper.invalidate = invalidate  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate

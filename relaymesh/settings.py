"""Settings: a TOML file plus ``RELAYMESH_*`` environment variables.

Precedence, highest first: explicit overrides (command-line options), environment
variables (``RELAYMESH_GOSSIP__PROBE_INTERVAL_MS=500``: section and key joined by
``__``), the TOML file, the defaults below. Gossip defaults follow
hashicorp/memberlist's LAN profile.

Only the sections in ``RELOADABLE_SECTIONS`` change on SIGHUP / ``reload-settings``;
the rest (addresses, store, gossip timings and keys) need a restart. ``diff_fields``
names what changed without ever returning a value, so secrets never reach the
settings history.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from relaymesh.exceptions import ConfigError

__all__ = [
    "DEFAULT_STORE_URL",
    "RELOADABLE_SECTIONS",
    "AgentSettings",
    "BreakerSettings",
    "DispatchSettings",
    "GossipSettings",
    "GuardSettings",
    "MaintenanceSettings",
    "NodeSettings",
    "RetentionSettings",
    "RetryPolicy",
    "ScheduleSettings",
    "Settings",
    "TokenSettings",
    "WebSettings",
    "WorkerSettings",
    "diff_fields",
    "load_settings",
]

DEFAULT_STORE_URL = "sqlite:///./relaymesh.db"
RESERVED_ENV_PREFIX = "RELAYMESH_"
RELOADABLE_SECTIONS = (
    "worker",
    "guard",
    "breaker",
    "maintenance",
    "web",
    "retry",
    "agents",
    "retention",
    "schedules",
    "dispatch",
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class NodeSettings(_Section):
    name: str | None = None
    """Node name; defaults to ``<hostname>-<bind port>``. Must be stable across restarts."""
    bind: str = "127.0.0.1:7946"
    """UDP (probes, gossip) and TCP (push/pull) address."""
    advertise: str | None = None
    """Address peers should use, when it differs from ``bind`` (NAT, 0.0.0.0)."""
    http: str | None = None
    """HTTP address for /metrics, /healthz and the API; off when unset."""
    seeds_file: str | None = None
    store_url: str = DEFAULT_STORE_URL
    state_dir: str | None = None
    """Where the node keeps its last incarnation; the store's directory when unset."""
    store_unhealthy_after_s: float = Field(30.0, gt=0)
    """``/healthz`` answers 503 once the store has not answered for this long (also the
    shortest worker stall that counts; see docs/health.md)."""


class GossipSettings(_Section):
    probe_interval_ms: int = Field(1000, gt=0)
    probe_timeout_ms: int = Field(500, gt=0)
    indirect_checks: int = Field(3, ge=0)
    gossip_interval_ms: int = Field(200, gt=0)
    gossip_nodes: int = Field(3, ge=0)
    retransmit_mult: int = Field(4, gt=0)
    suspicion_mult: int = Field(4, gt=0)
    suspicion_max_timeout_mult: int = Field(6, gt=0)
    push_pull_interval_ms: int = Field(30_000, gt=0)
    suspect_recover_min_ms: int = Field(0, ge=0)
    """Minimum dwell in SUSPECT before a higher-incarnation ALIVE takes effect."""
    dead_recover_min_ms: int = Field(1000, ge=0)
    """Minimum dwell in DEAD before a higher-incarnation ALIVE takes effect."""
    awareness_max_multiplier: int = Field(8, gt=0)
    """Lifeguard local health: probe timeouts stretch up to this factor."""
    lifeguard: bool = True
    """Switch off Lifeguard's refinements (for benchmarks that show what they buy)."""
    probe_schedule: Literal["coordinated", "random"] = "coordinated"
    """"coordinated": each member is probed by one peer per round, so a crash is found
    within about one probe interval; "random": every node walks its own shuffled list
    (classic SWIM, memberlist). See relaymesh/membership/schedule.py."""
    dedup_cache_size: int = Field(4096, gt=0)
    max_packet_bytes: int = Field(1400, ge=512)
    keys: list[str] = Field(default_factory=list)
    """Base64 AES keys (16, 24 or 32 bytes); the first seals, all open. Empty: no encryption."""
    label: str = ""
    """Cluster label; packets with another label are dropped."""
    allow_plaintext: bool = False
    """Let a node whose gossip address is not loopback run without ``keys``: anyone who
    can reach the port can then forge membership. See relaymesh/exposure.py."""

    @field_validator("keys")
    @classmethod
    def _keys_are_aes_keys(cls, value: list[str]) -> list[str]:
        # Checked here, before anything listens, so a placeholder copied from the example
        # files is refused with the fix in the same line.
        for i, key in enumerate(value):
            try:
                size = len(base64.b64decode(key, validate=True))
            except (binascii.Error, ValueError):
                size = -1
            if size not in (16, 24, 32):
                raise ValueError(
                    f"key #{i + 1} is not a base64 AES key of 16, 24 or 32 bytes: "
                    "put the output of `relaymesh keygen` there"
                )
        return value


DEAD_OWNER_STALE_HEARTBEATS = 2
"""Heartbeat intervals a lease must have been silent before a DEAD verdict takes it."""


class WorkerSettings(_Section):
    enabled: bool = True
    slots: int = Field(4, gt=0)
    """Steps of task agents (scripts, ``sleep``) held at once per node: what bounds the
    processes a node runs. In-process agents (``echo``) take no slot."""
    lease_ms: int = Field(30_000, gt=0)
    heartbeat_ms: int = Field(2_000, gt=0)
    """How often held leases are extended, in one store call for all of them. Short,
    because a DEAD verdict only reclaims leases silent for two of these (below)."""
    poll_ms: int = Field(500, gt=0)
    claim_batch: int = Field(256, gt=0)
    """Most steps claimed in one transaction. Task agents are claimed within the free
    ``slots`` as well; in-process agents (``echo``) hold at most 2 batches at once.
    Larger: fewer, bigger transactions (throughput, less CPU per step), coarser sharing
    between nodes."""
    pause_when_local_not_alive: bool = True
    low_starvation_threshold: int = Field(10, gt=0)
    drain_timeout_s: float = Field(30.0, ge=0)

    @property
    def dead_owner_stale_after_ms(self) -> int:
        """A DEAD owner's step is reclaimed at once only when its lease has not been
        heartbeated for this long (store clock): gossip's verdict is a hint, a missing
        heartbeat the evidence, so a forged DEAD for a live worker reclaims nothing."""
        return DEAD_OWNER_STALE_HEARTBEATS * self.heartbeat_ms


class GuardSettings(_Section):
    max_load: float | None = None
    """1-minute load average above which the node claims nothing; unset: 4 x CPU count."""
    min_available_mb: int = Field(64, ge=0)
    max_swap_pct: float = Field(90.0, ge=0, le=100)


class BreakerSettings(_Section):
    failure_threshold: int = Field(5, gt=0)
    open_ms: int = Field(30_000, gt=0)


class DispatchSettings(_Section):
    """The one-hour dispatch window (``work/dispatch.py``) and its low-rate breaker."""

    min_success_rate: float = Field(0.3, ge=0, le=1)
    """An agent whose success rate since its breaker last closed (within the hour)
    falls below this opens its breaker with reason ``low_success_rate``; 0 turns the
    rule off."""
    min_samples: int = Field(15, gt=0)
    """Runs of the agent needed before ``min_success_rate`` is judged."""
    summary_interval_ms: int = Field(10_000, gt=0)
    """How often a node writes its window to the store (table ``dispatch_stats``),
    where ``mesh-summary`` and ``GET /api/stats`` read the whole mesh."""


class MaintenanceSettings(_Section):
    interval_ms: int = Field(1000, gt=0)
    leader_lease_ms: int = Field(10_000, gt=0)
    mesh_prune_older_than_ms: int = Field(24 * 3600 * 1000, gt=0)
    mesh_prune_limit: int = Field(100, gt=0)
    mesh_prune_interval_ms: int = Field(60_000, gt=0)


class RetryPolicy(_Section):
    max_attempts: int = Field(3, gt=0)
    """Counts the first run: 3 means at most 3 runs."""
    base_backoff_ms: int = Field(1000, ge=0)
    max_backoff_ms: int = Field(60_000, ge=0)


class AgentSettings(_Section):
    command: list[str]
    timeout_s: float = Field(60.0, gt=0)
    concurrency: int = Field(2, gt=0)
    transient_exit_codes: list[int] = Field(default_factory=lambda: [75])
    retry: RetryPolicy | None = None
    max_output_bytes: int = Field(1_048_576, gt=0)
    env: dict[str, str] = Field(default_factory=dict)
    """Variables the script sees, besides PATH, HOME, LANG and ``RELAYMESH_STEP_*``."""
    pass_env: list[str] = Field(default_factory=list)
    """Names of the node's own variables the script may see too (never ``RELAYMESH_*``)."""

    @field_validator("env", "pass_env")
    @classmethod
    def _no_relaymesh_names(cls, value: Any) -> Any:
        # The node's settings and secrets (gossip keys, the store URL) travel as
        # RELAYMESH_* variables; the step variables are set by the agent runner itself.
        reserved = sorted(n for n in value if str(n).upper().startswith(RESERVED_ENV_PREFIX))
        if reserved:
            raise ValueError(f"{reserved[0]}: names starting with RELAYMESH_ are reserved")
        return value

    @field_validator("command")
    @classmethod
    def _command_not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("command must name a program")
        return value


class TokenSettings(_Section):
    name: str
    token_sha256: str
    role: Literal["admin", "submitter", "readonly"] = "readonly"
    """``readonly``: every read; ``submitter``: reads and ``POST /api/workflows``; ``admin``:
    everything."""


class WebSettings(_Section):
    tokens: list[TokenSettings] = Field(default_factory=list)
    allowed_hosts: list[str] = Field(default_factory=list)
    """``Host`` header values accepted besides the bind address and loopback names
    (``relay.example.com`` or ``relay.example.com:8701``); any other gets 421, so a
    DNS-rebinding page cannot talk to the API through the victim's browser."""
    max_streams: int = Field(32, gt=0)
    """Open ``/api/events`` streams allowed at once on this node (429 beyond)."""
    max_streams_per_token: int = Field(4, gt=0)
    """Open ``/api/events`` streams allowed at once per token name (429 beyond)."""


class RetentionSettings(_Section):
    """How long finished work and the operations trail are kept (``work/retention.py``).

    Ages are measured by the store's clock. The maintenance leader deletes what is past
    retention in batches of ``batch_size``, each batch its own short transaction. A
    workflow goes whole (steps, dependencies, locks, ownership events) or not at all,
    and only once it is final. Dead letters are kept while they are not replayed: a
    FAILED workflow (it holds one) is removed only when ``remove_dead_letters`` is
    true, and then ``dead_letter_after_s`` after it failed. ``0`` for any age turns
    that kind of removal off.
    """

    finished_after_s: int = Field(7 * 86400, ge=0)
    """Keep SUCCEEDED and CANCELLED workflows (with their steps, dependencies, locks,
    ownership events and idempotency keys, but each schedule's latest fire) this long
    after they finished; 0 keeps them forever."""
    dead_letter_after_s: int = Field(30 * 86400, ge=0)
    """Age after which a FAILED workflow (it holds unreplayed dead letters) is removed,
    only when ``remove_dead_letters`` is true; 0 keeps them forever."""
    remove_dead_letters: bool = False
    """Unreplayed dead letters are never removed unless this is true."""
    conflicts_after_s: int = Field(30 * 86400, ge=0)
    """Keep ``lease_conflicts`` rows this long; 0 keeps them forever."""
    audit_after_s: int = Field(90 * 86400, ge=0)
    """Keep ``audit_log`` rows this long; 0 keeps them forever."""
    settings_history_after_s: int = Field(90 * 86400, ge=0)
    """Keep ``settings_history`` rows this long; 0 keeps them forever."""
    batch_size: int = Field(500, gt=0)
    """Most workflows (or rows of the other tables) one delete transaction removes."""
    max_batches: int = Field(20, gt=0)
    """Most batches per table in one pass; a bigger backlog goes on in the next pass."""
    interval_s: int = Field(300, ge=0)
    """Seconds between retention passes on the maintenance leader; 0 runs one on every
    maintenance pass."""
    vacuum_pages: int = Field(2000, ge=0)
    """SQLite: free pages handed back to the file system per incremental-vacuum step
    after a pass that deleted something (each step is one short write transaction);
    0 turns it off. PostgreSQL leaves this to autovacuum."""
    vacuum_max_steps: int = Field(50, gt=0)
    """SQLite: most incremental-vacuum steps after one pass."""
    archive_dir: str | None = None
    """Write each finished workflow (steps, dependencies, ownership events, keys) to
    this directory before deleting it, as gzip JSON lines, one file per UTC day it
    finished (``relaymesh-archive-YYYY-MM-DD.jsonl.gz``), fsynced before the delete
    commits. A batch that cannot be archived is not deleted (counted in
    ``retention_archive_errors_total``). None (the default) deletes without a copy.
    Read with ``relaymesh archive show``, load back with ``relaymesh store restore``."""


class ScheduleSettings(_Section):
    """``[schedules.NAME]``: submit a workflow file on a cron expression or every N
    seconds. The maintenance leader fires it; each tick is one workflow across the mesh
    (idempotency key ``schedule:NAME:<fire time in epoch ms>``)."""

    workflow: str
    """The workflow file (JSON or TOML) to submit; a relative path is relative to the
    node's working directory. Read at each fire, so edits apply without a reload."""
    cron: str | None = None
    """Five-field cron expression (minute hour day-of-month month day-of-week),
    evaluated in ``timezone``. Exactly one of ``cron`` and ``every_s``."""
    every_s: int | None = Field(None, gt=0)
    """Fire at every multiple of this many seconds since the epoch."""
    timezone: str = "UTC"
    """IANA timezone the cron expression is evaluated in (DST changes follow it)."""
    enabled: bool = True
    """A disabled schedule is listed but never fires."""

    @field_validator("cron")
    @classmethod
    def _cron_valid(cls, value: str | None) -> str | None:
        from relaymesh.schedules import check_cron

        return None if value is None else check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _timezone_valid(cls, value: str) -> str:
        from relaymesh.schedules import check_timezone

        check_timezone(value)
        return value

    @model_validator(mode="after")
    def _one_expression(self) -> ScheduleSettings:
        if (self.cron is None) == (self.every_s is None):
            raise ValueError("set exactly one of cron and every_s")
        return self

    @property
    def expression(self) -> str:
        """How ``relaymesh schedules`` shows when it fires."""
        return self.cron if self.cron is not None else f"every {self.every_s}s"


_toml_path: contextvars.ContextVar[Path | None] = contextvars.ContextVar("toml_path", default=None)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RELAYMESH_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    node: NodeSettings = NodeSettings()
    gossip: GossipSettings = GossipSettings()
    worker: WorkerSettings = WorkerSettings()
    guard: GuardSettings = GuardSettings()
    breaker: BreakerSettings = BreakerSettings()
    dispatch: DispatchSettings = DispatchSettings()
    maintenance: MaintenanceSettings = MaintenanceSettings()
    retry: RetryPolicy = RetryPolicy()
    web: WebSettings = WebSettings()
    agents: dict[str, AgentSettings] = Field(default_factory=dict)
    retention: RetentionSettings = RetentionSettings()

    schedules: dict[str, ScheduleSettings] = Field(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _toml_path.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    def retry_policy_for(self, agent: str) -> RetryPolicy:
        spec = self.agents.get(agent)
        if spec is not None and spec.retry is not None:
            return spec.retry
        return self.retry


def load_settings(
    config_path: str | Path | None = None, overrides: dict[str, dict[str, Any]] | None = None
) -> Settings:
    """Read settings; raise ``ConfigError`` with one clear line when they are invalid.

    ``overrides`` maps section to {key: value} (from command-line options) and wins
    over everything else. ``None`` values in it are ignored.
    """
    path = Path(config_path) if config_path else None
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            with path.open("rb") as fh:
                tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    init: dict[str, Any] = {}
    for section, values in (overrides or {}).items():
        kept = {k: v for k, v in values.items() if v is not None}
        if kept:
            init[section] = kept
    token = _toml_path.set(path)
    try:
        if init:
            # Merge overrides into the file's section instead of replacing it whole.
            base = Settings()
            merged: dict[str, Any] = {
                section: {**getattr(base, section).model_dump(), **values}
                for section, values in init.items()
            }
            return Settings(**merged)
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"invalid setting {where}: {first['msg']}") from exc
    finally:
        _toml_path.reset(token)


def diff_fields(old: Settings, new: Settings) -> list[str]:
    """Dotted names of the fields whose values differ (``worker.slots``); never the values."""
    changed: list[str] = []
    old_d = old.model_dump()
    new_d = new.model_dump()

    def walk(prefix: str, a: Any, b: Any) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(f"{prefix}.{key}" if prefix else str(key), a.get(key), b.get(key))
        elif a != b:
            changed.append(prefix)

    walk("", old_d, new_d)
    return changed

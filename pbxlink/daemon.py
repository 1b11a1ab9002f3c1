"""The composition root: builds every part from the config and runs them in one TaskGroup.

Start-up and shutdown order live here and nowhere else:
  start: store (schema ready) -> simulator (when no Asterisk is configured) -> web -> in one
         TaskGroup: the store writer, the AMI link, the tick clock, the signal watcher;
         then systemd hears READY=1.
  stop (SIGTERM/SIGINT): the TaskGroup is cancelled -> the AMI link closes -> the store
         flushes every record still queued -> web and simulator close -> exit 0.
The tracker is driven only from the AMI read callback and the tick task, both on the event
loop thread, so it needs no lock; what it emits is handed to the store without awaiting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import secrets
import signal
import time
from collections.abc import Callable

import structlog

from pbxlink.ami.framing import Message
from pbxlink.ami.link import AmiLink, AuthError
from pbxlink.calllog import CallLogStore, relink_calls
from pbxlink.calllog.retention import Retention
from pbxlink.calls import CallTracker, CallUpdate
from pbxlink.clients.directory import Directory
from pbxlink.clients.identify import Identifier
from pbxlink.clients.sources import LookupChain
from pbxlink.config import Config, ConfigError
from pbxlink.config import load as load_config
from pbxlink.desk import Desk, RosterChanged, Tick
from pbxlink.desk_adapter import DeskAdapter
from pbxlink.hub import Hub
from pbxlink.lock import DatabaseLock
from pbxlink.operators import Operator, Operators, hash_token
from pbxlink.sim.server import AmiSimulator
from pbxlink.startup import listening, print_demo_link, start_simulator, web_tls
from pbxlink.systemd import notify
from pbxlink.web import Metrics, WebServer, make_app, serve
from pbxlink.web.urls import client_photo

log = structlog.get_logger("pbxlink.daemon")

TICK_S = 5.0
EXIT_AUTH = 78  # EX_CONFIG: the unit's RestartPreventExitStatus stops a restart loop


class _Stop(Exception):
    """Raised inside the TaskGroup to end it on a signal."""


class Daemon:
    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time) -> None:
        #: with the simulator and nobody configured (the demo), a supervisor made up for this run
        self.demo_token: str | None = None
        if config.ami.mode == "simulator" and not config.operators:
            self.demo_token = secrets.token_urlsafe(32)
            demo = Operator("Demo supervisor", (), "supervisor", hash_token(self.demo_token))
            config = dataclasses.replace(config, operators=[demo])
        self.config = config
        self.clock = clock
        self.started_at = clock()
        self.tracker = CallTracker(config.tracker)
        self.store = CallLogStore(config.storage.database_path, too_long=config.thresholds)
        self.retention = Retention(self.store, config.retention, config.recordings_dir)
        self.directory = Directory.from_config(config, relink_calls=relink_calls)
        clients = config.clients
        self.sources = LookupChain(list(clients.sources), clients.lookup_budget_ms / 1000)
        self.metrics = Metrics()
        identifier = Identifier(self.directory, self.sources, self.metrics.observe_lookup)
        self.operators = Operators(config.operators)
        self.desk = Desk(
            company=config.company,
            operators=config.operators,
            too_long=config.thresholds,
            photo_url=client_photo,
        )
        self.hub = Hub(config, self.operators, lambda event: self.desk_adapter.tell(event))
        self.desk_adapter = DeskAdapter(self.desk, self.hub, self.store, identifier, self.metrics)
        self.operators.listeners.append(lambda ops: self.desk_adapter.tell(RosterChanged(ops)))
        self.directory.listeners.append(self.desk_adapter.clients_changed)
        self.metrics.bind_hub(self.hub)
        self.simulator: AmiSimulator | None = None
        self.link: AmiLink | None = None
        self.web_port: int | None = None
        self._stop = asyncio.Event()
        self._logins = 0

    # -- what /healthz and /metrics read ---------------------------------------------------------

    @property
    def ami_state(self) -> str:
        return str(self.link.state) if self.link else "down"

    @property
    def last_event_age_s(self) -> float | None:
        last = self.link.last_event_at if self.link else None
        return None if last is None else max(self.clock() - last, 0.0)

    @property
    def calls_active(self) -> int:
        return self.tracker.active_calls

    @property
    def store_queue_depth(self) -> int:
        return self.store.queue_depth

    # -- running ---------------------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP (`systemctl reload pbxlink`): the operators and their tokens again from the
        config file, without dropping a call. A removed operator's API token stops working
        and its popup socket closes with 4002; a broken file changes nothing (logged)."""
        path = self.config.path
        if path is None:
            log.warning("daemon.reload_skipped", reason="no config file")
            return
        try:
            fresh = load_config(path)
        except ConfigError as exc:
            log.error("daemon.reload_failed", error=str(exc))
            return
        if not fresh.operators and self.demo_token is not None:
            return  # the demo's made-up supervisor stays until real operators are configured
        self.operators.replace(fresh.operators)  # web auth, the hub's hello and the desk
        log.info("daemon.reloaded", path=str(path), operators=len(fresh.operators))

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        """Run until stopped; the exit code. One daemon per database: another daemon's lock
        raises DatabaseInUse. A start-up that fails (a port in use: StartError) closes what it
        had opened, so the process exits instead of waiting on the database's threads."""
        lock = DatabaseLock.acquire(self.store.path)
        self._started = False
        self._web: WebServer | None = None
        try:
            return await self._run()
        except BaseException:
            if not self._started:
                await self._close()
            raise
        finally:
            lock.release()

    async def _close(self) -> None:
        """Everything start-up opened, in the order that loses nothing."""
        await self.desk_adapter.close()
        await self.hub.close()
        await self.store.close()
        await self.sources.close()
        await self.directory.close()
        if self._web is not None:
            await self._web.close()
        if self.simulator is not None:
            await self.simulator.close()

    async def _run(self) -> int:
        cfg = self.config
        await self.store.open()
        await self.directory.open()
        orphans = await self.store.open_calls()
        if orphans:  # finished or resumed by the tracker once the first resync is complete
            log.info("daemon.open_calls_found", count=len(orphans))
            self.tracker.adopt(orphans)
        ami = cfg.ami
        if ami.mode == "simulator":  # no Asterisk configured: the built-in one, over TCP
            self.simulator, ami = await start_simulator(cfg)
        self.link = AmiLink(
            ami,
            subscription=self.tracker.subscription(),
            on_event=self._on_event,
            on_up=self._on_up,
            on_down=lambda at: self._dispatch(self.tracker.link_down(at)),
            clock=self.clock,
        )
        app = make_app(
            cfg,
            self,
            self.metrics,
            directory=self.directory,
            store=self.store,
            hub=self.hub,
            operators=self.operators,
        )
        context = web_tls(cfg.web.tls_cert_file, cfg.web.tls_key_file)
        host, port = cfg.web.host, cfg.web.port
        web = self._web = await listening(
            "web", host, port, lambda: serve(app, host, port, ssl_context=context)
        )
        self.web_port = web.port
        self.hub.web_port = web.port  # the bound port: pages from it may open the popups
        await listening("hub", cfg.hub.host, cfg.hub.port, self.hub.start)
        log.info("web.listening", host=cfg.web.host, port=web.port)
        if self.demo_token is not None:
            print_demo_link(cfg.web.host, web.port, context is not None, self.demo_token)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        code = 0
        self._started = True  # from here on the finally below closes everything
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.store.run(), name="store")
                tg.create_task(self.link.run(), name="ami")
                tg.create_task(self._ticker(), name="tick")
                tg.create_task(self.retention.run(), name="retention")
                tg.create_task(self._wait_stop(), name="signals")
                # what start-up built lives as long as the daemon: out of the collector's
                # sight, full collections stop walking it (100-400 ms pauses near the
                # ceiling in benchmarks/popups.py, every popup in flight waiting)
                gc.collect()
                gc.freeze()
                notify("READY=1")
                log.info("daemon.ready", ami=self.link.where, database=str(self.store.path))
        except* _Stop:
            # these are kept in open_calls (the store's close writes their last snapshots)
            log.info("daemon.stopping", calls_in_progress=self.tracker.active_calls)
        except* AuthError as group:
            log.error("ami.login_refused", error=str(group.exceptions[0]))
            code = EXIT_AUTH
        finally:
            notify("STOPPING=1")
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            loop.remove_signal_handler(signal.SIGHUP)
            self.link.close()
            await self._close()
            log.info("daemon.stopped", code=code, written=self.store.written)
        return code

    async def _wait_stop(self) -> None:
        await self._stop.wait()
        raise _Stop

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self._tick(self.clock())

    def _tick(self, now: float) -> None:
        self._dispatch(self.tracker.tick(now))
        self.desk_adapter.tell(Tick(now))

    def _on_up(self, at: float) -> None:
        """Logged in: counted here; the FullyBooted that told it goes to the tracker next."""
        if self._logins:
            self.metrics.reconnected()
        self._logins += 1

    def _on_event(self, msg: Message, at: float) -> None:
        """On the AMI read path: CPU work only, hand-offs never wait."""
        self.metrics.events += 1
        updates = self.tracker.feed(msg, at)
        if updates:
            self._dispatch(updates)

    def _dispatch(self, updates: list[CallUpdate]) -> None:
        tell = self.desk_adapter.tell
        for update in updates:
            tell(update)

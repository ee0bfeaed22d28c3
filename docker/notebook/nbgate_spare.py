"""A spare kernel for nbgate's notebook server.

`SpareKernelManager` keeps one kernel of the default kernelspec started and
answering, outside the server's kernel map, so that it is invisible to
`GET /api/kernels`, `/api/status`, activity tracking and jupyter_server's own
culler. The next `start_kernel` for the default kernelspec without an explicit
kernel id takes it: the kernel is moved to the request's directory and given
the request's environment (a silent execute on the shell channel), its launch
arguments are rewritten so a restart matches a normal start, and only then is
it entered into the map. A new spare is started in the background right after.
Anything unexpected shuts the spare down and falls back to a normal start.

Written against jupyter_server 2.21.1 / jupyter_client 8.10.0 (pinned in
requirements.txt); the private parts used are listed in `_adopt`.
Log lines "nbgate spare kernel ready: <id>" / "... shut down: <id>" are what
tests/notebook_image.rs watches.
"""

from __future__ import annotations

import asyncio
import os
import time
import typing as t
from queue import Empty

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_server._tz import utcnow
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from traitlets import Bool, Float

try:  # present in jupyter_server 2.x; metrics are nice to have, never required
    from jupyter_server.prometheus.metrics import KERNEL_CURRENTLY_RUNNING_TOTAL
except Exception:  # pragma: no cover
    KERNEL_CURRENTLY_RUNNING_TOTAL = None

# The in-kernel part of a handout. It runs in a throwaway namespace (exec with
# fresh globals holding CWD, SET, UNSET) so nothing appears among the user's
# variables, and exec returns None, so no Out[] entry or `_` either (the
# request is also silent, store_history=False).
_PREPARE = """\
import os, sys
old = os.getcwd()
os.chdir(CWD)
for k in UNSET:
    os.environ.pop(k, None)
os.environ.update(SET)
if CWD != old:
    sys.path[:] = [CWD if p == old else p for p in sys.path]
    try:
        from IPython import get_ipython
        ip = get_ipython()
        dh = ip.user_ns.get('_dh') if ip is not None else None
        if isinstance(dh, list) and [str(p) for p in dh] == [old]:
            dh[:] = [type(dh[0])(CWD)]
    except Exception:
        pass
"""


class SpareKernelManager(AsyncMappingKernelManager):
    """AsyncMappingKernelManager with one pre-started, hidden default kernel."""

    spare_enabled = Bool(
        True,
        config=True,
        help="Keep one pre-started kernel of the default kernelspec ready.",
    )

    spare_refill = Bool(
        False,
        config=True,
        help="Start a new spare after each handout. Off: one spare per server, for its "
        "first notebook; a replacement would sit idle in every server in use, costing "
        "its memory (inside the user's limit) and a kernel start's CPU during login bursts.",
    )

    spare_prepare_timeout = Float(
        20.0,
        config=True,
        help="Seconds a spare may take to answer the handout request before it is "
        "shut down and a kernel is started normally instead.",
    )

    def __init__(self, **kwargs: t.Any) -> None:
        super().__init__(**kwargs)
        # The spare being started or ready: a task whose result is the kernel
        # manager of an answering kernel, or None when starting it failed.
        self._spare_task: asyncio.Task | None = None
        self._spare_closing = False
        self._spare_handouts = 0  # handouts in progress (each refills when done)
        self._spare_started = False  # a first spare was started

    # ----------------------------------------------------------------- spare life
    # The first spare is started by the server-extension start hook below,
    # which jupyter_server runs once the event loop is serving (ServerApp
    # _post_start), so server start never waits on it. Later ones are started
    # right after each handout only with spare_refill (off by default).

    def _refill_spare(self) -> None:
        """Start a spare: the first one always, later ones only with spare_refill."""
        if (
            self.spare_enabled
            and not self._spare_closing
            and self._spare_task is None
            and (self.spare_refill or not self._spare_started)
        ):
            self._spare_started = True
            self._spare_task = asyncio.ensure_future(self._start_spare())

    async def _start_spare(self):
        """Launch a default kernel in root_dir and wait until it answers."""
        km = None
        started = time.monotonic()
        try:
            launch: dict[str, t.Any] = {}
            km, _name, kernel_id = self.pre_start_kernel(self.default_kernel_name, launch)
            launch = {"cwd": self.root_dir, "env": dict(os.environ), "kernel_id": kernel_id}
            start_kwargs = getattr(self, "_kernel_start_kwargs", None)
            if start_kwargs is not None:
                launch = start_kwargs(**launch)
            await km.start_kernel(**launch)
            await self._request(km, "kernel_info_request", {}, self.kernel_info_timeout, resend=True)
        except Exception as e:
            self.log.warning("nbgate spare kernel: starting failed: %s", e)
            if km is not None:
                await self._discard(km, now=True)
            return None
        if self._spare_closing:
            await self._discard(km, now=True)
            return None
        self.log.info(
            "nbgate spare kernel ready: %s (%.2f s)", km.kernel_id, time.monotonic() - started
        )
        return km

    async def _discard(self, km, now: bool = False) -> None:
        try:
            await km.shutdown_kernel(now=now)
        except Exception as e:
            self.log.warning("nbgate spare kernel: shutdown of %s failed: %s", km.kernel_id, e)
        else:
            self.log.info("nbgate spare kernel shut down: %s", km.kernel_id)

    async def _request(
        self, km, msg_type: str, content: dict, timeout: float, resend: bool = False
    ) -> dict:
        """Send one shell request through a short-lived client; its reply content.

        With `resend` (for idempotent requests) it is re-sent every second until
        answered, so a kernel still binding its sockets is no problem; replies to
        earlier copies go to a socket that is closed by then.
        """
        kc = AsyncKernelClient(context=self.context, log=self.log)
        kc.load_connection_info(km.get_connection_info(session=False))
        kc.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=False)
        try:
            deadline = time.monotonic() + timeout
            sent: set[str] = set()
            while True:
                if not await km.is_alive():
                    raise RuntimeError("the kernel process is not running")
                if resend or not sent:
                    msg = kc.session.msg(msg_type, content)
                    kc.shell_channel.send(msg)
                    sent.add(msg["header"]["msg_id"])
                until = min(time.monotonic() + 1.0, deadline)
                while time.monotonic() < until:
                    try:
                        reply = await kc.get_shell_msg(timeout=max(0.05, until - time.monotonic()))
                    except Empty:
                        continue
                    if reply.get("parent_header", {}).get("msg_id") in sent:
                        return reply["content"]
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"no {msg_type} reply within {timeout:.0f} s")
        finally:
            kc.stop_channels()

    async def _take_spare(self, cwd: str, env: dict[str, str]):
        """The spare, moved to `cwd` with `env`; None if there is none or it failed."""
        task, self._spare_task = self._spare_task, None
        if task is None:
            return None
        km = await task
        if km is None:
            return None
        try:
            launch = km._launch_args
            have = launch.get("env") or {}
            names = {
                "CWD": cwd,
                "SET": {k: v for k, v in env.items() if have.get(k) != v},
                "UNSET": sorted(k for k in have if k not in env),
            }
            reply = await self._request(
                km,
                "execute_request",
                {
                    "code": "exec(%r, %r)" % (_PREPARE, names),
                    "silent": True,
                    "store_history": False,
                    "user_expressions": {},
                    "allow_stdin": False,
                    "stop_on_error": False,
                },
                self.spare_prepare_timeout,
            )
            if reply.get("status") != "ok":
                raise RuntimeError(f"{reply.get('ename')}: {reply.get('evalue')}")
            # A restart relaunches with these: make them what a normal start had.
            launch["cwd"] = cwd
            launch["env"] = dict(env)
        except Exception as e:
            self.log.warning("nbgate spare kernel %s not usable, starting normally: %s", km.kernel_id, e)
            await self._discard(km, now=True)
            return None
        return km

    def _adopt(self, km) -> str:
        """Enter a prepared spare into the map like `_async_start_kernel` does.

        Private jupyter_server/jupyter_client parts this module relies on:
        `_kernels`, `_kernel_connections`, `_kernel_start_kwargs`,
        `_finish_kernel_start`, `_initialized_culler` (MappingKernelManager),
        `pre_start_kernel` (MultiKernelManager: builds a kernel manager without
        entering it in the map) and the kernel manager's `_launch_args` (what a
        restart relaunches with; see `_take_spare`).
        """
        kernel_id = km.kernel_id
        self._kernels[kernel_id] = km
        self._kernel_connections[kernel_id] = 0
        km.execution_state = "idle"  # it just answered; no status will follow until a client connects
        km.reason = ""
        km.last_activity = utcnow()
        return kernel_id

    # ------------------------------------------------------------- public API

    async def _hand_out(self, path: str | None, env: dict[str, str] | None) -> str | None:
        """Hand out the spare (awaiting it if still starting); its id, or None."""
        cwd = self.cwd_for_path(path) if path is not None else os.getcwd()
        env = dict(os.environ) if env is None else dict(env)
        km = await self._take_spare(cwd, env)
        if km is not None and (km.kernel_name != self.default_kernel_name or self._spare_closing):
            await self._discard(km, now=True)
            km = None
        if km is None:
            self._refill_spare()
            return None
        kernel_id = self._adopt(km)
        self.log.info("Kernel started: %s (nbgate spare kernel handed out, cwd %s)", kernel_id, cwd)
        await self._finish_kernel_start(kernel_id)
        if KERNEL_CURRENTLY_RUNNING_TOTAL is not None:
            KERNEL_CURRENTLY_RUNNING_TOTAL.labels(type=km.kernel_name).inc()
        if not self._initialized_culler:
            self.initialize_culler()
        self._refill_spare()
        return kernel_id

    async def start_kernel(  # type: ignore[override]
        self, *, kernel_id: str | None = None, path: str | None = None, **kwargs: t.Any
    ) -> str:
        kernel_name = kwargs.get("kernel_name")
        if (
            self.spare_enabled
            and not self._spare_closing
            and kernel_id is None
            and kernel_name in (None, self.default_kernel_name)
            and set(kwargs) <= {"kernel_name", "env"}
            and self._spare_task is not None
        ):
            self._spare_handouts += 1
            try:
                kernel_id = await self._hand_out(path, kwargs.get("env"))
            finally:
                self._spare_handouts -= 1
            if kernel_id is not None:
                return kernel_id
        elif (
            self.spare_enabled
            and kernel_name in (None, self.default_kernel_name)
            and not self._spare_handouts
        ):
            # No spare and no handout that will start the next one (the start
            # hook did not run): start one for the next request.
            self._refill_spare()
        return await super().start_kernel(kernel_id=kernel_id, path=path, **kwargs)

    async def stop_spare(self, now: bool = False) -> None:
        """Shut the spare down (if any) and start no other."""
        self._spare_closing = True
        task, self._spare_task = self._spare_task, None
        km = await task if task is not None else None
        if km is not None:
            await self._discard(km, now=now)

    async def shutdown_all(self, now: bool = False) -> None:  # type: ignore[override]
        await asyncio.gather(self.stop_spare(now=now), super().shutdown_all(now=now))


# ------------------------------------------------------------------ server extension
# Enabled by etc/jupyter/jupyter_server_config.d/nbgate_spare.json; only used for
# its start hook, which runs after the server listens.


def _jupyter_server_extension_points():
    return [{"module": "nbgate_spare"}]


def _load_jupyter_server_extension(serverapp) -> None:
    pass


async def _start_jupyter_server_extension(serverapp) -> None:
    km = getattr(serverapp, "kernel_manager", None)
    if isinstance(km, SpareKernelManager):
        km._refill_spare()


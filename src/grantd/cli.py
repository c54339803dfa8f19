"""The operator's command line: serve, migrate, and users, apps and keys without the API."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer

from grantd.config import Settings
from grantd.core.context import Context
from grantd.core.errors import GrantdError

app = typer.Typer(help="grantd: an OAuth 2.0 authorization server.", no_args_is_help=True, add_completion=False)
users_app = typer.Typer(help="Manage user accounts.", no_args_is_help=True)
apps_app = typer.Typer(help="Manage apps.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage an app's API keys.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(apps_app, name="apps")
app.add_typer(keys_app, name="keys")
signing_keys_app = typer.Typer(help="Manage the keys that sign tokens.", no_args_is_help=True)
app.add_typer(signing_keys_app, name="signing-keys")
registration_tokens_app = typer.Typer(
    help="Initial access tokens for dynamic client registration (RFC 7591 §3).", no_args_is_help=True
)
app.add_typer(registration_tokens_app, name="registration-tokens")
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")
resources_app = typer.Typer(
    help="Manage the registered resources (RFC 8707): under GRANTD_RESOURCE_POLICY=registered, the only ones "
    "a token may be requested for.",
    no_args_is_help=True,
)
app.add_typer(resources_app, name="resources")

T = TypeVar("T")
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON, with the API's field names.")]


def _run(use_case: Callable[[Context], Awaitable[T]]) -> T:
    """Run one use case against the configured database, with signing keys loaded."""
    from grantd.core import signing_keys
    from grantd.store.migrate import upgrade

    async def main() -> T:
        ctx = Context.from_settings(Settings())
        try:
            await upgrade(ctx.db)
            await signing_keys.ensure_active(ctx)
            await signing_keys.load(ctx)
            return await use_case(ctx)
        finally:
            await ctx.close()

    try:
        return asyncio.run(main())
    except GrantdError as exc:
        typer.echo(f"error: {exc.error}: {exc.message}", err=True)
        raise typer.Exit(1) from None


def _emit(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        for key, value in data.items():
            typer.echo(f"{key}: {', '.join(value) if isinstance(value, list) else value}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (GRANTD_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (GRANTD_PORT).")] = None,
    workers: Annotated[int | None, typer.Option(help="Server processes (GRANTD_WORKERS).")] = None,
    migrate: Annotated[bool, typer.Option(help="Migrate the database before serving.")] = True,
) -> None:
    """Serve the API (Swagger UI at /docs)."""
    import uvicorn

    from grantd import logs

    settings = Settings()
    workers = workers or settings.workers
    host = host or settings.host
    metrics_dir = _metrics_multiprocess_dir(settings, workers)  # before anything imports prometheus_client
    try:
        if migrate:
            _migrate_apart(settings)
        if settings.metrics_port:
            _serve_metrics(host, settings.metrics_port)
        options: dict[str, Any] = dict(
            factory=True,
            host=host,
            port=port or settings.port,
            workers=workers,
            log_level=settings.log_level,
            log_config=logs.config(settings.log_level, settings.log_format),
            access_log=False,  # grantd logs each request itself, without query strings
            loop="uvloop",
            http="httptools",
            # Behind the proxies named, uvicorn puts the address a request was forwarded for in the
            # ASGI scope's "client" before grantd sees it: the one address every rate limit per
            # address, audit event and log line reads. Otherwise X-Forwarded-* is ignored.
            proxy_headers=bool(settings.forwarded_allow_ips),
            forwarded_allow_ips=settings.forwarded_allow_ips or None,
            server_header=False,
            timeout_keep_alive=settings.timeout_keep_alive,
            limit_concurrency=settings.limit_concurrency or None,
        )
        if workers > 1:
            _serve_workers(uvicorn.Config("grantd.server:create_app", **options))
        else:
            uvicorn.run("grantd.server:create_app", **options)
    finally:
        if metrics_dir is not None:
            import shutil

            shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve_workers(config: Any) -> None:
    """Several worker processes under uvicorn's supervisor (which restarts a worker that dies), each
    listening on a socket of its own (``_ListenerPerWorker``)."""
    import socket

    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    family = socket.AF_INET6 if config.host and ":" in config.host else socket.AF_INET
    held = socket.socket(family, socket.SOCK_STREAM)
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        held.bind((config.host, config.port))
    except OSError as exc:
        typer.echo(f"error: cannot listen on {config.host}:{config.port}: {exc}", err=True)
        sys.exit(STARTUP_FAILURE)
    held.set_inheritable(True)
    import logging

    logging.getLogger("uvicorn.error").info(
        "Uvicorn running on http://%s:%d, one listening socket per worker (SO_REUSEPORT)", config.host, held.getsockname()[1]
    )
    Multiprocess(config, sockets=_ListenerPerWorker([held])).run()


class _ListenerPerWorker(list):  # type: ignore[type-arg]
    """The sockets uvicorn's supervisor hands each worker it starts. In the supervisor: the one
    socket it holds, bound with ``SO_REUSEPORT`` (so the address stays grantd's while workers come
    and go) and never listened on. Unpickled in a worker, it becomes a socket of that worker's
    own, bound to the same address with ``SO_REUSEPORT``, which uvicorn listens on.

    Why: on one shared listening socket, whichever worker's loop wakes first accepts a whole burst
    of connections; with keep-alive clients the split stays as it fell (3 to 1 was measured with
    two workers), and the busier worker is the limit while the other idles. With a socket each,
    the kernel spreads new connections over the workers by a hash of their addresses.
    """

    def __reduce__(self) -> Any:
        return (_listener_of_this_worker, (list.__getitem__(self, 0),))


def _listener_of_this_worker(held: Any) -> list[Any]:
    import socket

    own = socket.socket(held.family, socket.SOCK_STREAM)
    own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    own.bind(held.getsockname())
    held.close()  # this worker's copy; the supervisor keeps its own
    return [own]


def _metrics_multiprocess_dir(settings: Settings, workers: int) -> str | None:
    """With several workers, share metric values through files (prometheus-client's multiprocess mode).

    Returns the directory this command created (and removes on exit), or None. Must run
    before prometheus_client is imported: the workers inherit the variable.
    """
    import os
    import tempfile

    variable = "PROMETHEUS_MULTIPROC_DIR"  # grantd.metrics.MULTIPROCESS_ENV, without importing prometheus_client yet
    if workers < 2 or not (settings.metrics_enabled or settings.metrics_port) or os.environ.get(variable):
        return None
    path = tempfile.mkdtemp(prefix="grantd-metrics-")
    os.environ[variable] = path
    return path


def _serve_metrics(host: str, port: int) -> None:
    """Prometheus metrics on a port of their own, from this (the supervising) process, in a thread."""
    from prometheus_client import start_http_server

    from grantd import metrics

    start_http_server(port, addr=host, registry=metrics.exposition_registry())


def _migrate_apart(settings: Settings) -> None:
    """Migrate in a forked child process. Alembic and the SQLAlchemy parts it needs (~18 MB) then
    never enter the process that goes on to serve: with one worker, that is the server itself."""
    if not hasattr(os, "fork"):
        _migrate(settings)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _migrate(settings)
            code = 0
        except BaseException:  # noqa: BLE001 - reported here, the parent stops
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        typer.echo("grantd: the migration failed; not serving.", err=True)
        raise typer.Exit(1)


def _migrate(settings: Settings) -> None:
    from grantd.core import signing_keys
    from grantd.store.migrate import upgrade

    async def main() -> None:
        ctx = Context.from_settings(settings)
        try:
            await upgrade(ctx.db)
            await signing_keys.ensure_active(ctx)
        finally:
            await ctx.close()

    asyncio.run(main())


@app.command()
def migrate() -> None:
    """Bring the database to the newest schema and create the first signing key."""
    settings = Settings()
    _migrate(settings)
    typer.echo(f"database is current: {settings.masked()['database_url']}")


@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Option(help="The user's email address.")],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)],
    as_json: JsonOption = False,
) -> None:
    """Create a user account."""
    from grantd.core import accounts

    async def use_case(ctx: Context) -> dict[str, Any]:
        user_id = await accounts.create_user(ctx, email, password)
        return {"user_id": user_id, "email": accounts.normalize_email(email)}

    _emit(_run(use_case), as_json)


def _emit_next(cursor: str | None) -> None:
    if cursor:
        typer.echo(f"next page: --cursor {cursor}")


EmailArgument = Annotated[str, typer.Argument(help="The account's email address.")]


def _on_user(email: str, act: Callable[[Context, str], Awaitable[Any]]) -> Any:
    """Run ``act(ctx, user_id)`` on the account of ``email``, as the operator."""
    from grantd.core import admin

    async def use_case(ctx: Context) -> Any:
        return await act(ctx, (await admin.user_by_email(ctx, email)).user_id)

    return _run(use_case)


@users_app.command("list")
def users_list(
    email: Annotated[str | None, typer.Option(help="Only accounts whose email address contains this.")] = None,
    created_after: Annotated[str | None, typer.Option(help="Created at or after: RFC 3339, or a duration back (7d).")] = None,
    created_before: Annotated[str | None, typer.Option(help="Created at or before: RFC 3339, or a duration back.")] = None,
    locked: Annotated[
        bool | None, typer.Option("--locked/--unlocked", help="Only locked accounts, or only the others.", show_default=False)
    ] = None,
    cursor: Annotated[str | None, typer.Option(help="The next_cursor a previous page printed.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many (default 50, at most 200).")] = None,
    as_json: JsonOption = False,
) -> None:
    """List accounts, newest first, a page at a time."""
    from grantd.api.admin import user_data
    from grantd.core import admin

    async def use_case(ctx: Context) -> dict[str, Any]:
        now = ctx.now()
        filters = admin.UserFilter(
            email,
            None if created_after is None else _since(created_after, now, "--created-after"),
            None if created_before is None else _since(created_before, now, "--created-before"),
            locked,
        )
        page = await admin.list_users(ctx, filters, cursor, limit)
        return {"users": [user_data(user) for user in page.items], "next_cursor": page.next_cursor}

    result = _run(use_case)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    for user in result["users"]:
        flags = [flag for flag, on in (("locked", user["locked"]), ("admin", user["is_admin"])) if on]
        typer.echo("  ".join([user["user_id"], user["email"], user["created_at"], *flags]))
    _emit_next(result["next_cursor"])


@users_app.command("show")
def users_show(email: EmailArgument, as_json: JsonOption = False) -> None:
    """One account: when it was created, whether it is locked or an admin."""
    from grantd.api.admin import user_data
    from grantd.core import admin

    async def act(ctx: Context, user_id: str) -> dict[str, Any]:
        return user_data(await admin.get_user(ctx, user_id))

    _emit(_on_user(email, act), as_json)


def _user_change(email: str, as_json: bool, change: Callable[..., Awaitable[Any]], *more: Any) -> None:
    from grantd.api.admin import user_data
    from grantd.core import audit as audit_log

    async def act(ctx: Context, user_id: str) -> dict[str, Any]:
        return user_data(await change(ctx, audit_log.OPERATOR, user_id, *more))

    _emit(_on_user(email, act), as_json)


@users_app.command("lock")
def users_lock(email: EmailArgument, as_json: JsonOption = False) -> None:
    """Lock an account: it cannot sign in, and its sessions and tokens end now."""
    from grantd.core import admin

    _user_change(email, as_json, admin.lock)


@users_app.command("unlock")
def users_unlock(email: EmailArgument, as_json: JsonOption = False) -> None:
    """Unlock an account: it can sign in again (its ended sessions and tokens stay ended)."""
    from grantd.core import admin

    _user_change(email, as_json, admin.unlock)


@users_app.command("grant-admin")
def users_grant_admin(email: EmailArgument, as_json: JsonOption = False) -> None:
    """Make an account an admin: it may use the admin API (/v1/admin) and pages (/admin)."""
    from grantd.core import admin

    _user_change(email, as_json, admin.set_admin, True)


@users_app.command("revoke-admin")
def users_revoke_admin(email: EmailArgument, as_json: JsonOption = False) -> None:
    """Make an admin an ordinary account again."""
    from grantd.core import admin

    _user_change(email, as_json, admin.set_admin, False)


@users_app.command("delete")
def users_delete(
    email: EmailArgument,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Delete an account and everything it owns (its apps, grants, sessions and tokens)."""
    from grantd.core import admin, audit as audit_log

    if not yes:
        typer.confirm(f"Delete the account of {email} and everything it owns?", abort=True)

    async def act(ctx: Context, user_id: str) -> dict[str, Any]:
        await admin.delete_user(ctx, audit_log.OPERATOR, user_id)
        return {"user_id": user_id, "deleted": True}

    _emit(_on_user(email, act), as_json)


@users_app.command("reset-password")
def users_reset_password(email: EmailArgument, as_json: JsonOption = False) -> None:
    """Email the account's owner the link to set a new password (as "Forgot your password?" does)."""
    from grantd.core import admin, audit as audit_log

    async def act(ctx: Context, user_id: str) -> dict[str, Any]:
        await admin.send_password_reset(ctx, audit_log.OPERATOR, user_id)
        return {"user_id": user_id, "password_reset_sent": True}

    _emit(_on_user(email, act), as_json)


@users_app.command("sessions")
def users_sessions(email: EmailArgument, as_json: JsonOption = False) -> None:
    """The account's live sessions, newest first."""
    from grantd.api.admin import session_data
    from grantd.core import admin

    async def act(ctx: Context, user_id: str) -> dict[str, Any]:
        return {"sessions": [session_data(s) for s in await admin.sessions(ctx, user_id)]}

    result = _on_user(email, act)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    for item in result["sessions"]:
        typer.echo(f"{item['jti']}  signed in {item['issued_at']}  expires {item['expires_at']}")


@users_app.command("revoke-sessions")
def users_revoke_sessions(email: EmailArgument, as_json: JsonOption = False) -> None:
    """End every session of the account (it must sign in again)."""
    from grantd.core import admin, audit as audit_log

    async def act(ctx: Context, user_id: str) -> dict[str, Any]:
        return {"user_id": user_id, "sessions_revoked": await admin.revoke_sessions(ctx, audit_log.OPERATOR, user_id)}

    _emit(_on_user(email, act), as_json)


@apps_app.command("create")
def apps_create(
    owner: Annotated[str, typer.Option(help="Email of the user who owns the app.")],
    name: Annotated[str, typer.Option(help="The app's name, shown on consent.")],
    redirect_uri: Annotated[list[str], typer.Option("--redirect-uri", help="A redirect URI; repeat for several.")],
    permissions: Annotated[str, typer.Option(help="Comma-separated: the most the app may ask for.")],
    as_json: JsonOption = False,
) -> None:
    """Register an app for a user; prints its app_key once."""
    from grantd.api.apps import app_data
    from grantd.core import accounts, apps
    from grantd.core.errors import NotFound

    async def use_case(ctx: Context) -> dict[str, Any]:
        owner_id = await accounts.user_id_by_email(ctx, owner)
        if owner_id is None:
            raise NotFound(f"No user with email {owner}.")
        created = await apps.create(ctx, owner_id, name, redirect_uri, permissions, operator=True)
        return {**app_data(created.app), "app_key": created.app_key}

    _emit(_run(use_case), as_json)


@apps_app.command("list")
def apps_list(
    owner: Annotated[str | None, typer.Option(help="Email of the developer whose apps to list.")] = None,
    self_registered: Annotated[
        bool, typer.Option("--self-registered", help="The apps no developer owns: registered by themselves "
                           "(open registration, an operator's initial access token) or by a client ID metadata document.")
    ] = False,
    name: Annotated[str | None, typer.Option(help="Only apps whose name contains this.")] = None,
    disabled: Annotated[
        bool | None, typer.Option("--disabled/--enabled", help="Only disabled apps, or only the others.", show_default=False)
    ] = None,
    created_after: Annotated[str | None, typer.Option(help="Created at or after: RFC 3339, or a duration back (7d).")] = None,
    created_before: Annotated[str | None, typer.Option(help="Created at or before: RFC 3339, or a duration back.")] = None,
    cursor: Annotated[str | None, typer.Option(help="The next_cursor a previous page printed.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many (default 50, at most 200).")] = None,
    as_json: JsonOption = False,
) -> None:
    """List apps, newest first, a page at a time: every app, a developer's, or the self-registered ones."""
    from grantd.api.admin import admin_app_data
    from grantd.core import admin
    from grantd.core.errors import InvalidRequest

    async def use_case(ctx: Context) -> dict[str, Any]:
        if owner is not None and self_registered:
            raise InvalidRequest("Give --owner EMAIL or --self-registered, not both.")
        now = ctx.now()
        filters = admin.AppFilter(
            owner, name, disabled,
            None if created_after is None else _since(created_after, now, "--created-after"),
            None if created_before is None else _since(created_before, now, "--created-before"),
            self_registered=self_registered,
        )
        page = await admin.list_apps(ctx, filters, cursor, limit)
        return {"apps": [admin_app_data(found) for found in page.items], "next_cursor": page.next_cursor}

    result = _run(use_case)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        for found in result["apps"]:
            _emit({name: found[name] for name in ("app_id", "name", "owner_email", "registration", "disabled")}, False)
            typer.echo("")
        _emit_next(result["next_cursor"])


@apps_app.command("show")
def apps_show(app_id: Annotated[str, typer.Argument(help="The app's app_id.")], as_json: JsonOption = False) -> None:
    """Any app, with its owner."""
    from grantd.api.admin import admin_app_data
    from grantd.core import admin

    async def use_case(ctx: Context) -> dict[str, Any]:
        return admin_app_data(await admin.get_app(ctx, app_id))

    _emit(_run(use_case), as_json)


@apps_app.command("enable")
def apps_enable(app_id: Annotated[str, typer.Argument(help="The app's app_id.")]) -> None:
    """Enable a disabled app again: its keys work again; no token from before it was disabled comes back."""
    from grantd.core import admin, audit as audit_log

    async def use_case(ctx: Context) -> dict[str, Any]:
        found = await admin.enable_app(ctx, audit_log.OPERATOR, app_id)
        return {"app_id": found.app.app_id, "disabled": found.app.disabled_at is not None}

    _emit(_run(use_case), False)


@apps_app.command("disable")
def apps_disable(
    app_id: Annotated[str, typer.Argument(help="The app's app_id (a client ID metadata document's URL too).")],
) -> None:
    """Disable any app: its keys, codes and tokens stop working at once."""
    from grantd.core import apps

    async def use_case(ctx: Context) -> dict[str, Any]:
        app = await apps.disable(ctx, None, app_id)
        return {"app_id": app.app_id, "disabled": app.disabled_at is not None}

    _emit(_run(use_case), False)


@registration_tokens_app.command("create")
def registration_tokens_create(
    owner: Annotated[
        str | None, typer.Option(help="Email of the developer who owns the apps it registers; without: no developer does.")
    ] = None,
    expires_in: Annotated[int | None, typer.Option(min=60, help="Seconds until it expires; without: until revoked.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Create an initial access token (GRANTD_DYNAMIC_REGISTRATION token or open); prints it once."""
    from grantd.api.registration import token_data
    from grantd.core import accounts, registration
    from grantd.core.errors import NotFound

    async def use_case(ctx: Context) -> dict[str, Any]:
        owner_id = None
        if owner is not None:
            owner_id = await accounts.user_id_by_email(ctx, owner)
            if owner_id is None:
                raise NotFound(f"No user with email {owner}.")
        created = await registration.create_initial_access_token(ctx, owner_id, expires_in=expires_in)
        return {**token_data(created.token), "initial_access_token": created.initial_access_token}

    _emit(_run(use_case), as_json)


@registration_tokens_app.command("list")
def registration_tokens_list(as_json: JsonOption = False) -> None:
    """The operator's initial access tokens (those with no developer as owner)."""
    from grantd.api.registration import token_data
    from grantd.core import registration

    async def use_case(ctx: Context) -> dict[str, Any]:
        return {"keys": [token_data(token) for token in await registration.list_initial_access_tokens(ctx, None)]}

    result = _run(use_case)
    if as_json:
        typer.echo(json.dumps({"tokens": result["keys"]}, indent=2))
    else:
        _emit_keys(result, False)


@registration_tokens_app.command("revoke")
def registration_tokens_revoke(token_id: Annotated[str, typer.Argument(help="The token's token_id.")]) -> None:
    """Revoke any initial access token; the apps it registered stay."""
    from grantd.api.registration import token_data
    from grantd.core import registration

    async def use_case(ctx: Context) -> dict[str, Any]:
        return token_data(await registration.revoke_initial_access_token(ctx, None, token_id))

    _emit(_run(use_case), False)


@keys_app.command("create")
def keys_create(
    app_id: Annotated[str, typer.Option("--app", help="The app's app_id.")],
    as_json: JsonOption = False,
) -> None:
    """Create an API key pair for an app; prints its key_secret once."""
    from grantd.api.apps import created_key_data
    from grantd.core import apps

    async def use_case(ctx: Context) -> dict[str, Any]:
        return created_key_data(await apps.create_key(ctx, None, app_id))

    _emit(_run(use_case), as_json)


@resources_app.command("create")
def resources_create(
    uri: Annotated[str, typer.Option(help="The resource's URI: what clients send as resource, its tokens' aud.")],
    permissions: Annotated[str, typer.Option(help="Comma-separated: the permissions it accepts.")],
    description: Annotated[str, typer.Option(help="What it is, for the people who read the list.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Register a resource and the permissions it accepts."""
    from grantd.api.resources import resource_data
    from grantd.core import resources

    async def use_case(ctx: Context) -> dict[str, Any]:
        return resource_data(await resources.create(ctx, uri, permissions, description))

    _emit(_run(use_case), as_json)


@resources_app.command("list")
def resources_list(as_json: JsonOption = False) -> None:
    """The registered resources."""
    from grantd.api.resources import resource_data
    from grantd.core import resources

    async def use_case(ctx: Context) -> list[dict[str, Any]]:
        return [resource_data(r) for r in await resources.list_all(ctx)]

    listed = _run(use_case)
    if as_json:
        typer.echo(json.dumps({"resources": listed}, indent=2))
        return
    for item in listed:
        _emit(item, False)
        typer.echo("")


@resources_app.command("delete")
def resources_delete(
    uri: Annotated[str, typer.Option(help="The registered resource's URI.")],
    as_json: JsonOption = False,
) -> None:
    """Delete a registered resource: no token is issued for it any more."""
    from grantd.core import resources

    async def use_case(ctx: Context) -> dict[str, Any]:
        await resources.delete(ctx, uri)
        return {"uri": uri, "deleted": True}

    _emit(_run(use_case), as_json)


def _key_info(info: Any) -> dict[str, Any]:
    from grantd.api.wire import rfc3339

    return {
        "kid": info.kid,
        "algorithm": info.algorithm,
        "created_at": rfc3339(info.created_at),
        "activates_at": rfc3339(info.activates_at),
        "retired_at": rfc3339(info.retired_at),
    }


@signing_keys_app.command("rotate")
def signing_keys_rotate(
    delay: Annotated[
        int | None,
        typer.Option(help="Seconds before the new key signs (default GRANTD_SIGNING_KEY_ACTIVATION_DELAY)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Publish a new signing key of each algorithm (ES256, RS256) now; they sign after the delay,
    when the current keys retire."""
    from grantd.core import signing_keys

    async def use_case(ctx: Context) -> dict[str, Any]:
        return {"keys": [_key_info(info) for info in await signing_keys.rotate(ctx, delay)]}

    _emit_keys(_run(use_case), as_json)


@signing_keys_app.command("list")
def signing_keys_list(as_json: JsonOption = False) -> None:
    """The published signing keys (ES256 and RS256), newest first."""
    from grantd.core import signing_keys

    async def use_case(ctx: Context) -> dict[str, Any]:
        return {"keys": [_key_info(info) for info in await signing_keys.list_keys(ctx)]}

    _emit_keys(_run(use_case), as_json)


def _emit_keys(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        for key in result["keys"]:
            _emit(key, False)
            typer.echo("")


def _since(value: str, now: int, option: str = "--since") -> int:
    """Unix seconds of a moment option (``--since``): an RFC 3339 date-time, or a duration back
    from now (90s, 15m, 24h, 7d)."""
    from grantd.api.audit import parse_rfc3339

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = value.strip()
    if text[:-1].isdigit() and text[-1:].lower() in units:
        return now - int(text[:-1]) * units[text[-1].lower()]
    return parse_rfc3339(text, option)


@app.command()
def audit(
    since: Annotated[str, typer.Option(help="RFC 3339 date-time (2024-07-09T22:02:52Z) or a duration back from now: 90s, 15m, 24h, 7d.")],
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many events (default: all).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Every audit event since a moment, newest first: who did what, when, from which address."""
    from grantd.api.audit import event_data
    from grantd.core import audit as audit_log

    async def use_case(ctx: Context) -> dict[str, Any]:
        events = await audit_log.all_events(ctx, since=_since(since, ctx.now()), limit=limit)
        return {"events": [event_data(event) for event in events]}

    result = _run(use_case)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    for event in result["events"]:
        detail = json.dumps(event["detail"], separators=(",", ":")) if event["detail"] else ""
        fields = [
            event["occurred_at"],
            event["event"],
            f"actor={event['actor']}",
            f"user={event['user_id'] or '-'}",
            f"app={event['app_id'] or '-'}",
            f"address={event['address'] or '-'}",
            detail,
        ]
        typer.echo("  ".join(field for field in fields if field))


@app.command()
def prune(
    expired_before: Annotated[str | None, typer.Option(help="Delete what expired before this moment: RFC 3339, or a duration back from now (90s, 15m, 24h, 7d). Default: a day ago.")] = None,
    audit_before: Annotated[str | None, typer.Option(help="Also delete audit events that occurred before this moment (same forms); kept by default.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Delete the expired tokens, codes and sessions that nothing can use any more, now (the servers
    also do it every GRANTD_PRUNE_INTERVAL)."""
    from grantd.core import retention

    async def use_case(ctx: Context) -> dict[str, Any]:
        now = ctx.now()
        pruned = await retention.prune(
            ctx,
            expired_before=None if expired_before is None else _since(expired_before, now, "--expired-before"),
            audit_before=None if audit_before is None else _since(audit_before, now, "--audit-before"),
        )
        return pruned._asdict()

    _emit(_run(use_case), as_json)


@config_app.command("show")
def config_show(as_json: JsonOption = False) -> None:
    """Print the effective configuration (environment, GRANTD_CONFIG_FILE, defaults), secrets masked."""
    try:
        values = Settings().masked()
    except ValueError as exc:  # pydantic's ValidationError is a ValueError: say which setting is wrong
        typer.echo(f"error: the configuration is invalid: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(values, indent=2, sort_keys=True))
        return
    for name in sorted(values):
        value = values[name]
        shown = json.dumps(value) if isinstance(value, dict | list | bool) else "" if value is None else value
        typer.echo(f"GRANTD_{name.upper()}={shown}")


def main() -> None:
    app()

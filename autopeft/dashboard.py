"""optuna-dashboard for a study (``autopeft dashboard``), read-only, with objective names."""

from __future__ import annotations

from typing import Any

from autopeft.core.errors import AutopeftError
from autopeft.core.secrets import masked

#: Where Optuna keeps a study's objective names (``Study.set_metric_names``), read by
#: optuna-dashboard to label the objectives.
METRIC_NAMES_ATTR = "study:metric_names"


def dashboard_server(study: Any, host: str = "127.0.0.1", port: int = 8080) -> Any:
    """optuna-dashboard for the study's storage, bound to ``host:port`` but not serving yet.

    Nothing is written to the storage. A study made before autopeft stored objective names
    gets them served from its configuration (optuna-dashboard then labels the objectives
    ``accuracy``, ... instead of ``values_0``, ...), without writing them.

    Returns:
        A ``wsgiref`` server: ``serve_forever()`` serves, ``server_close()`` releases it.

    Raises:
        AutopeftError: in one line when the port is in use or the host cannot be bound.
    """
    import socket
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from optuna_dashboard import wsgi

    class Handler(WSGIRequestHandler):
        def address_string(self) -> str:  # the client's address, without a DNS lookup
            return str(self.client_address[0])

    server_class: type[WSGIServer] = WSGIServer
    if ":" in host:  # an IPv6 address

        class Server6(WSGIServer):
            address_family = socket.AF_INET6

        server_class = Server6
    app = wsgi(_named_storage(study))
    try:
        return make_server(host, port, app, server_class, Handler)
    except OSError as err:
        import errno

        if err.errno == errno.EADDRINUSE:
            rule = f"port {port} on {host} is already in use (another dashboard or server?)"
        else:
            rule = f"cannot listen on {host}:{port}: {err.strerror or err}"
        raise AutopeftError(
            f"--port: {rule}; give a free one with --port, e.g. --port {_free_hint(port)}"
            + ("" if err.errno == errno.EADDRINUSE else ", or another --host")
        ) from None


def _free_hint(port: int) -> int:
    """A port to suggest instead of ``port``: the next one (8080 -> 8081)."""
    return port + 1 if 0 < port < 65535 else 8080


def _named_storage(study: Any) -> Any:
    """The study's storage for optuna-dashboard, read-only as far as autopeft goes.

    Serves the study's objective names when the storage has none stored.
    """
    import optuna

    names = list(study.metrics)
    study_id = study.optuna._study_id

    def named(sid: int, attrs: dict[str, Any]) -> dict[str, Any]:
        if sid == study_id and METRIC_NAMES_ATTR not in attrs:
            return {**attrs, METRIC_NAMES_ATTR: names}
        return attrs

    # optuna-dashboard reads a study's system attributes both ways.
    class Named(optuna.storages.RDBStorage):
        def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
            return named(study_id, super().get_study_system_attrs(study_id))

        def get_all_studies(self) -> list[Any]:  # FrozenStudy
            studies = super().get_all_studies()
            for frozen in studies:
                frozen.system_attrs = named(frozen._study_id, frozen.system_attrs)
            return studies

    return Named(study.storage_url, skip_table_creation=True)  # the tables exist: no write


def dashboard(study: Any, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve optuna-dashboard for the study's storage (blocks until interrupted).

    Raises:
        AutopeftError: in one line when the port is in use or the host cannot be bound.
    """
    server = dashboard_server(study, host, port)
    try:
        shown = f"[{host}]" if ":" in host else host
        print(  # the bound port: --port 0 takes a free one
            f"optuna-dashboard for {study.config.name!r}: http://{shown}:{server.server_port}/ "
            f"(storage {masked(study.storage_url)}); Ctrl-C stops it",
            flush=True,
        )
        if study.optuna.metric_names is None:
            print(
                "note: this study stores no objective names (made by an older autopeft); "
                f"the dashboard shows them from its configuration: {', '.join(study.metrics)}",
                flush=True,
            )
        server.serve_forever()
    finally:
        server.server_close()

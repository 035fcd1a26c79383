"""``/metrics`` over HTTP on gevent (``gevent.pywsgi``), no threads."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry

from loadgen.metrics.collectors import Metrics
from loadgen.metrics.merge import MergedCollector

log = logging.getLogger(__name__)

DEFAULT_PORT = 9646


class Exporter:
    """A running ``/metrics`` server; :meth:`stop` ends it."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.host, self.port = server.address[0], server.server_port

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        self.server.stop(timeout=1)


def serve(source: Any, port: int = DEFAULT_PORT, host: str = "0.0.0.0") -> Exporter | None:
    """Serve ``source`` (a :class:`Metrics`, a :class:`MergedCollector`, a
    ``CollectorRegistry`` or any collector) on ``http://host:port/metrics`` in greenlets of
    this process's hub; ``port`` 0 serves nothing and returns None.

    gevent's WSGI server rather than prometheus_client's ``start_http_server``: that one
    runs a thread, which under Locust's monkey patching is a greenlet anyway, and whose
    locks would not mix with a real thread's. A scrape waits for its turn on the hub like
    any greenlet, so a saturated process answers slowly (the lag metric says why).
    """
    if not port:
        return None
    from gevent.pywsgi import WSGIServer
    from prometheus_client import make_wsgi_app

    if isinstance(source, Metrics):
        source = MergedCollector(source, stale_after=None)
    if isinstance(source, CollectorRegistry):
        registry = source
    else:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(source)
    server = WSGIServer((host, port), make_wsgi_app(registry), log=None, error_log=log)
    try:
        server.start()
    except OSError as exc:
        raise OSError(exc.errno, f"cannot serve metrics on {host}:{port}: {exc.strerror}") from exc
    return Exporter(server)

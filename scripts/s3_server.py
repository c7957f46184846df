"""A local S3-compatible server for the integration tests: moto's WSGI app behind one lock.

Plain `moto_server` checks a conditional put (If-None-Match) and then writes without a
lock, so two concurrent conditional puts of the same Delta commit can both succeed.
Serving every request under one lock makes each request atomic, which is what a real
object store guarantees. Usage: python s3_server.py HOST PORT
"""
import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

LOCK = threading.Lock()
APP = DomainDispatcherApplication(create_backend_app)


def locked_app(environ, start_response):
    with LOCK:
        # Run the request and materialize the whole response under the lock.
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"] = status
            captured["headers"] = headers
            return lambda data: None

        result = APP(environ, capture)
        try:
            body = b"".join(result)
        finally:
            if hasattr(result, "close"):
                result.close()
    start_response(captured["status"], captured["headers"])
    return [body]


if __name__ == "__main__":
    host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    run_simple(host, port, locked_app, threaded=True, use_reloader=False, use_debugger=False)

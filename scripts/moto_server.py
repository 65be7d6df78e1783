"""moto server with one request handled at a time.

Real DynamoDB applies each conditional write atomically (writes to one item are serialized). moto's
DynamoDB evaluates the condition and applies the update without a lock, so under concurrent requests
two conditional increments can both pass and one update is lost. Nodewright's concurrency tests
(16 tasks racing for pods and pool limits) need DynamoDB's guarantee, so this launcher serializes
request handling with one lock around moto's WSGI app. Clients still send concurrently (many
connections); only the emulator's processing is one at a time, as DynamoDB's is per item.

Usage: python scripts/moto_server.py PORT   (binds 127.0.0.1)
"""

import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import BaseWSGIServer, run_simple

# The concurrency tests open hundreds of connections at once (16 tasks, each with 16 writes in
# flight); werkzeug's listen backlog of 128 dropped the rest's SYNs, and the SDK's 3 s connect
# timeout failed them. DynamoDB itself never refuses a connection for that.
BaseWSGIServer.request_queue_size = 1024


def main() -> None:
    port = int(sys.argv[1])
    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def serialized(environ, start_response):
        with lock:
            # Materialize the body inside the lock: moto does its work while producing it.
            return list(app(environ, start_response))

    run_simple("127.0.0.1", port, serialized, threaded=True)


if __name__ == "__main__":
    main()

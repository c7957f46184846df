"""A TCP proxy that adds a fixed delay to every HTTP request, as S3's time to first
byte does, and counts requests and connections.

    python3 scripts/latency-proxy.py LISTEN_PORT UPSTREAM_HOST:PORT DELAY_MS [STATS_FILE]

Point a client's endpoint at http://127.0.0.1:LISTEN_PORT. On every connection, the
first bytes the client sends after the server last answered start a new request: they
are held DELAY_MS before going upstream (so a request's body is not delayed again,
and a connection kept alive pays the delay once per request, not once per packet).
Responses pass through at once. On SIGTERM or SIGINT it writes one JSON line to
STATS_FILE (or stderr): requests, connections, and the most requests in flight at
once. The kernel here has no netem; this is how the S3 figures in
docs/BENCHMARKS.md were made (scripts/s3-latency-bench.sh drives it).
"""

import asyncio
import json
import signal
import sys


class Stats:
    def __init__(self):
        self.requests = 0
        self.connections = 0
        self.in_flight = 0
        self.peak_in_flight = 0

    def as_json(self):
        return json.dumps(
            {
                "requests": self.requests,
                "connections": self.connections,
                "peak_in_flight": self.peak_in_flight,
            }
        )


STATS = Stats()


async def handle(client_reader, client_writer, upstream, delay):
    host, port = upstream
    try:
        server_reader, server_writer = await asyncio.open_connection(host, port)
    except OSError:
        client_writer.close()
        return
    STATS.connections += 1
    # `waiting`: a request was sent upstream and its response has not started.
    state = {"idle": True, "waiting": False}

    async def client_to_server():
        while True:
            data = await client_reader.read(65536)
            if not data:
                break
            if state["idle"]:
                state["idle"] = False
                state["waiting"] = True
                STATS.requests += 1
                STATS.in_flight += 1
                STATS.peak_in_flight = max(STATS.peak_in_flight, STATS.in_flight)
                await asyncio.sleep(delay)
            server_writer.write(data)
            await server_writer.drain()
        server_writer.close()

    async def server_to_client():
        while True:
            data = await server_reader.read(65536)
            if not data:
                break
            if state["waiting"]:
                state["waiting"] = False
                STATS.in_flight -= 1
            state["idle"] = True
            client_writer.write(data)
            await client_writer.drain()
        client_writer.close()

    try:
        await asyncio.gather(client_to_server(), server_to_client())
    except (ConnectionError, OSError):
        pass
    finally:
        if state["waiting"]:
            STATS.in_flight -= 1
        for writer in (client_writer, server_writer):
            writer.close()


async def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    listen_port = int(sys.argv[1])
    host, _, port = sys.argv[2].rpartition(":")
    delay = int(sys.argv[3]) / 1000.0
    stats_file = sys.argv[4] if len(sys.argv) > 4 else None
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, (host, int(port)), delay), "127.0.0.1", listen_port
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    line = STATS.as_json()
    if stats_file:
        with open(stats_file, "w") as f:
            f.write(line + "\n")
    else:
        print(line, file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
